//! Contacts: one mergeable map per user id with the name the user gave them, their latest
//! contact card (keys, devices, relays) and when they were added. The card is the only
//! authority on a contact's devices: a device it no longer lists is no longer theirs.

use loro::{LoroMap, LoroValue, ValueOrContainer};
use volli_core::{ContactCard, DeviceCertificate, Timestamp, UserId};

use super::Vault;
use super::doc::VaultDoc;
use crate::StoreError;

/// A contact as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// The contact's user id.
    pub user_id: UserId,
    /// This user's name for them: the one this user gave them, else their own.
    pub name: String,
    /// Their own name, from their latest card.
    pub display_name: String,
    /// Whether this user gave them a name of its own (else `name` follows `display_name`).
    pub renamed: bool,
    /// Their latest card.
    pub card: ContactCard,
    /// Their devices, as their latest card lists them.
    pub devices: Vec<DeviceCertificate>,
    /// When they were added.
    pub added_at: Timestamp,
}

fn entry(value: ValueOrContainer) -> Option<LoroMap> {
    match value {
        ValueOrContainer::Container(loro::Container::Map(m)) => Some(m),
        _ => None,
    }
}

fn read(doc: &VaultDoc, user: &str, map: &LoroMap) -> Option<Contact> {
    let user_id: UserId = user.parse().ok()?;
    if matches!(
        map.get("removed"),
        Some(ValueOrContainer::Value(LoroValue::Bool(true)))
    ) {
        return None;
    }
    let card = match map.get("card")? {
        ValueOrContainer::Value(LoroValue::Binary(b)) => doc.card(&b)?,
        _ => return None,
    };
    if card.user_id() != user_id {
        return None;
    }
    let display_name = card.name().to_owned();
    let stored = match map.get("name") {
        Some(ValueOrContainer::Value(LoroValue::String(s))) => Some(s.to_string()),
        _ => None,
    };
    // A name this user chose is flagged. Earlier releases stored the card's name at first
    // and flagged nothing: a stored name equal to the card's is not a choice, and follows
    // the card; another one was given by the user.
    let renamed = match map.get("renamed") {
        Some(ValueOrContainer::Value(LoroValue::Bool(flag))) => flag,
        _ => stored.as_ref().is_some_and(|n| *n != display_name),
    };
    let name = match stored {
        Some(n) if renamed => n,
        _ => display_name.clone(),
    };
    let added_at = match map.get("added_at") {
        Some(ValueOrContainer::Value(LoroValue::I64(ms))) => Timestamp::from_millis(ms),
        _ => Timestamp::from_millis(0),
    };
    let devices = card.devices().to_vec();
    Some(Contact {
        user_id,
        name,
        display_name,
        renamed,
        card,
        devices,
        added_at,
    })
}

impl Vault {
    /// Adds a contact, or updates one: a newer card replaces an older one; `name`, when
    /// given, replaces the stored name. Returns the contact and whether it is new.
    pub async fn put_contact(
        &self,
        card: ContactCard,
        name: Option<String>,
    ) -> Result<(Contact, bool), StoreError> {
        let id = card.user_id();
        let user = id.to_string();
        self.write(move |doc| {
            doc.forget_contact(&id);
            let contacts = doc.contact_map();
            let existing = contacts
                .get(&user)
                .and_then(entry)
                .and_then(|m| read(doc, &user, &m));
            let map = contacts.ensure_mergeable_map(&user)?;
            let is_new = existing.is_none();
            let newer = existing
                .as_ref()
                .is_none_or(|c| card.issued_at() > c.card.issued_at());
            if newer {
                follow_card(&map, existing.as_ref(), &card)?;
                map.insert("card", card.to_bytes())?;
            }
            if let Some(name) = name {
                map.insert("name", name)?;
                map.insert("renamed", true)?;
            } else if is_new {
                map.insert("name", card.name())?;
            }
            if is_new {
                map.insert("added_at", Timestamp::now().as_millis())?;
                map.insert("removed", false)?;
            }
            read(doc, &user, &map)
                .map(|c| (c, is_new))
                .ok_or_else(|| StoreError::Document("stored contact does not read back".into()))
        })
        .await
    }

    /// Replaces a contact's card with a newer one. Only an existing contact is updated: a
    /// card arriving after its user was removed (or was never added) changes nothing and
    /// returns `false`.
    pub async fn update_contact_card(&self, card: ContactCard) -> Result<bool, StoreError> {
        let id = card.user_id();
        let user = id.to_string();
        self.write(move |doc| {
            doc.forget_contact(&id);
            let contacts = doc.contact_map();
            let Some(map) = contacts.get(&user).and_then(entry) else {
                return Ok(false);
            };
            let Some(existing) = read(doc, &user, &map) else {
                return Ok(false);
            };
            if card.issued_at() <= existing.card.issued_at() {
                return Ok(false);
            }
            follow_card(&map, Some(&existing), &card)?;
            map.insert("card", card.to_bytes())?;
            Ok(true)
        })
        .await
    }

    /// Gives a contact a name of this user's own (`None`: their own name again). Returns
    /// the contact, or `None` if there is no such contact.
    pub async fn rename_contact(
        &self,
        user: UserId,
        name: Option<String>,
    ) -> Result<Option<Contact>, StoreError> {
        let key = user.to_string();
        self.write(move |doc| {
            doc.forget_contact(&user);
            let contacts = doc.contact_map();
            let Some(map) = contacts.get(&key).and_then(entry) else {
                return Ok(None);
            };
            let Some(existing) = read(doc, &key, &map) else {
                return Ok(None);
            };
            match name {
                Some(name) => {
                    map.insert("name", name)?;
                    map.insert("renamed", true)?;
                }
                None => {
                    map.insert("name", existing.display_name.as_str())?;
                    map.insert("renamed", false)?;
                }
            }
            Ok(read(doc, &key, &map))
        })
        .await
    }

    /// Every contact, by user id.
    pub async fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        self.read(|doc| {
            let mut out = Vec::new();
            doc.contact_map().for_each(|user, v| {
                if let Some(c) = entry(v).and_then(|m| read(doc, user, &m)) {
                    out.push(c);
                }
            });
            out.sort_by_key(|c| c.user_id);
            out
        })
        .await
    }

    /// One contact. Answered from the contact cache when it can be (see
    /// [`super::doc::ContactCache`]), else through the actor, which fills the cache.
    pub async fn contact(&self, user: UserId) -> Result<Option<Contact>, StoreError> {
        if let Some(contact) = super::doc::cached_contact(&self.contacts, &user) {
            return Ok(Some(contact));
        }
        let key = user.to_string();
        self.read(move |doc| {
            let contact = doc
                .contact_map()
                .get(&key)
                .and_then(entry)
                .and_then(|m| read(doc, &key, &m));
            if let Some(c) = &contact {
                doc.remember_contact(c);
            }
            contact
        })
        .await
    }

    /// Removes a contact. Returns false if there was none.
    pub async fn remove_contact(&self, user: UserId) -> Result<bool, StoreError> {
        let key = user.to_string();
        self.write(move |doc| {
            doc.forget_contact(&user);
            let contacts = doc.contact_map();
            let Some(map) = contacts.get(&key).and_then(entry) else {
                return Ok(false);
            };
            if read(doc, &key, &map).is_none() {
                return Ok(false);
            }
            // A flag, not a deletion: a mergeable child keeps its identity, so deleting the
            // key and adding the contact again later would resurrect stale fields.
            map.insert("removed", true)?;
            Ok(true)
        })
        .await
    }
}

/// Before a contact's newer card is stored: a name that follows the card's (not one this
/// user gave) follows to the new card's, so that devices of an earlier release, which show
/// the stored name, show the contact's new name too.
fn follow_card(
    map: &LoroMap,
    existing: Option<&Contact>,
    card: &ContactCard,
) -> Result<(), StoreError> {
    if let Some(existing) = existing
        && !existing.renamed
        && card.name() != existing.display_name
    {
        map.insert("name", card.name())?;
    }
    Ok(())
}

/// Contacts a vault holds at most (removed ones included): a bound on the contacts
/// document, which every device with `contacts` holds in memory and a pairing hands over.
pub(crate) const MAX_CONTACTS: usize = 2000;

/// When each contact's card (removed contacts' too) was issued: what an import must not
/// roll back.
pub(super) fn issued(doc: &VaultDoc) -> std::collections::BTreeMap<String, Timestamp> {
    let mut out = std::collections::BTreeMap::new();
    doc.contact_map().for_each(|user, v| {
        if let Some(at) = entry(v).and_then(|m| card_issued(doc, user, &m)) {
            out.insert(user.to_owned(), at);
        }
    });
    out
}

fn card_issued(doc: &VaultDoc, user: &str, map: &LoroMap) -> Option<Timestamp> {
    let card = match map.get("card")? {
        ValueOrContainer::Value(LoroValue::Binary(b)) => doc.card(&b)?,
        _ => return None,
    };
    (card.user_id().to_string() == user).then(|| card.issued_at())
}

/// Whether an import may leave the contacts document as `doc` holds it, given when each
/// card was issued before: no contact's card goes back to an older one (which could bring
/// back a device the contact revoked) or away, and the document stays within bounds.
pub(super) fn check(
    before: &std::collections::BTreeMap<String, Timestamp>,
    doc: &VaultDoc,
) -> Result<(), String> {
    let contacts = doc.contact_map();
    if contacts.len() > MAX_CONTACTS {
        return Err(format!("it would hold more than {MAX_CONTACTS} contacts"));
    }
    for (user, at) in before {
        let now = contacts
            .get(user)
            .and_then(entry)
            .and_then(|m| card_issued(doc, user, &m));
        if now.is_none_or(|now| now < *at) {
            return Err(format!(
                "it would roll back the card of contact {user:.16}…"
            ));
        }
    }
    Ok(())
}
