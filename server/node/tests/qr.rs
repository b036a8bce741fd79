//! The QR code the API returns decodes to exactly the invite link: the SVG is rasterized as a
//! camera would see it and read back with an independent decoder (rqrr).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::body::Body;
use axum::http::{Request, header};
use support::{TOKEN, app};

/// Draws the SVG's rectangles (`M{l} {t}h{w}v{h}H{l}V{t}`) into a bitmap.
fn rasterize(svg: &str) -> (usize, Vec<bool>) {
    let attr = |name: &str| -> usize {
        let start = svg.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        svg[start..].split('"').next().unwrap().parse().unwrap()
    };
    let (w, h) = (attr("width"), attr("height"));
    assert_eq!(w, h);
    let mut pixels = vec![false; w * h];
    let d_start = svg.find(" d=\"").unwrap() + 4;
    let d = svg[d_start..].split('"').next().unwrap();
    for rect in d.split('M').filter(|r| !r.is_empty()) {
        let nums: Vec<usize> = rect
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let (left, top, width, height) = (nums[0], nums[1], nums[2], nums[3]);
        for y in top..top + height {
            for x in left..left + width {
                pixels[y * w + x] = true;
            }
        }
    }
    (w, pixels)
}

#[tokio::test]
async fn the_invite_qr_code_decodes_to_the_link() {
    let app = app().await;
    let request = Request::post("/v1/invites")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"ttl_secs": 3600, "max_uses": 5}"#))
        .unwrap();
    let (status, _, body) = app.call(request).await;
    assert_eq!(status, 201, "{body}");
    let link = body["link"].as_str().unwrap();
    let (size, pixels) = rasterize(body["qr_svg"].as_str().unwrap());
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(size, size, |x, y| {
        if pixels[y * size + x] { 0 } else { 255 }
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    let (_, content) = grids[0].decode().unwrap();
    assert_eq!(content, link);
    assert!(volli_core::Invite::parse(&content).is_ok());
}

#[tokio::test]
async fn an_empty_body_makes_a_default_invite() {
    let app = app().await;
    let request = Request::post("/v1/invites")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = app.call(request).await;
    assert_eq!(status, 201, "{body}");
    let invite = volli_core::Invite::parse(body["link"].as_str().unwrap()).unwrap();
    assert_eq!(invite.max_uses(), 1);
    let lifetime = invite.expires_at().as_millis() - volli_core::Timestamp::now().as_millis();
    assert!(
        (23 * 3600 * 1000..=24 * 3600 * 1000).contains(&lifetime),
        "one day by default"
    );
}
