-- Contacts the user removed, and when. An invite issued before the removal does not let
-- them back in (not even one they redeemed before); a newer invite does, and clears the row.
CREATE TABLE removed_contacts (
    user_id    TEXT    PRIMARY KEY,
    removed_at INTEGER NOT NULL
);
