//! The transform pipeline: one [`Transform`] applied to decoded pixels, in
//! Cloudflare's order (trim, flip, rotate, resize by `fit`, then the colour
//! filters, blur and sharpen), with the output size checked against the
//! route's cap before any pixel is touched.

use super::codec::Kind;
use super::options::{Fit, Format, Gravity, OptionError, Transform};
use super::raster::{Geometry, Planes, Raster, fixed_focus, geometry};

const WHITE: [u8; 4] = [255, 255, 255, 255];

/// The output size `t` makes of a `width`×`height` source, or the option
/// that makes it too large (or empty).
pub fn output_size(t: &Transform, (width, height): (u32, u32), max_pixels: u64) -> Result<(u32, u32), OptionError> {
    let (w, h) = after_trim_and_rotate(t, width, height)?;
    let g = plan(t, w, h);
    let pixels = u64::from(g.out_width) * u64::from(g.out_height);
    if pixels > max_pixels {
        let option = match (t.dpr, t.width) {
            (Some(d), _) if d > 1.0 => "dpr",
            (_, Some(_)) => "width",
            _ => "height",
        };
        return Err(OptionError::new(option, format!("the output would be {}x{} pixels, over this route's cap of {max_pixels}", g.out_width, g.out_height)));
    }
    Ok((g.out_width, g.out_height))
}

fn after_trim_and_rotate(t: &Transform, width: u32, height: u32) -> Result<(u32, u32), OptionError> {
    let (mut w, mut h) = (width, height);
    if let Some([top, right, bottom, left]) = t.trim {
        let cut = |side: u32, a: u32, b: u32| side.checked_sub(a.saturating_add(b)).filter(|v| *v > 0);
        (w, h) = cut(w, left, right).zip(cut(h, top, bottom)).ok_or_else(|| OptionError::new("trim", format!("cuts away the whole {width}x{height} image")))?;
    }
    Ok(if matches!(t.rotate, Some(90 | 270)) { (h, w) } else { (w, h) })
}

fn plan(t: &Transform, w: u32, h: u32) -> Geometry {
    let dpr = f64::from(t.dpr.unwrap_or(1.0));
    let scale = |v: u32| ((f64::from(v) * dpr).round() as u32).max(1);
    geometry(w, h, t.width.map(scale), t.height.map(scale), t.fit.unwrap_or_default())
}

/// Applies `t`. Call [`output_size`] first: this trusts the size.
pub fn apply(mut image: Raster, t: &Transform) -> Raster {
    if let Some(trim) = t.trim {
        image = image.trim(trim).expect("output_size checked the trim");
    }
    if let Some(flip) = t.flip {
        image = image.flip(flip);
    }
    if let Some(degrees) = t.rotate {
        image = image.rotate(degrees);
    }
    let g = plan(t, image.width, image.height);
    image = match g.inner {
        Some(inner) => image.resize(inner, g.window, (0.5, 0.5)).pad(g.out_width, g.out_height, t.background.unwrap_or(WHITE)),
        None => {
            let focus = image.focus(t.gravity.unwrap_or_default(), g.window);
            image.resize((g.out_width, g.out_height), g.window, focus)
        }
    };
    if let Some(f) = t.brightness {
        image.brightness(f);
    }
    if let Some(f) = t.contrast {
        image.contrast(f);
    }
    if let Some(f) = t.gamma {
        image.gamma(f);
    }
    if let Some(f) = t.saturation {
        image.saturation(f);
    }
    if let Some(radius) = t.blur {
        image.gaussian_blur(radius / 2.0);
    }
    if let Some(amount) = t.sharpen.filter(|a| *a > 0.0) {
        image.sharpen(amount);
    }
    image
}

/// Whether all `t` does to the pixels is a resize that [`apply_to_planes`]
/// can do: no trim, flip, rotation, padding, filter or `gravity=auto` (whose
/// search for detail reads RGB).
pub fn only_resizes(t: &Transform) -> bool {
    let Transform { trim, flip, rotate, fit, gravity, brightness, contrast, gamma, saturation, blur, sharpen, .. } = *t;
    trim.is_none()
        && flip.is_none()
        && rotate.unwrap_or(0) == 0
        && fit != Some(Fit::Pad)
        && gravity != Some(Gravity::Auto)
        && [brightness, contrast, gamma, saturation, blur].iter().all(Option::is_none)
        && sharpen.unwrap_or(0.0) <= 0.0
}

/// [`apply`] for a `t` that [`only_resizes`], on planes not yet in RGB.
pub fn apply_to_planes(image: Planes, t: &Transform) -> Planes {
    debug_assert!(only_resizes(t));
    let g = plan(t, image.width(), image.height());
    let focus = fixed_focus(t.gravity.unwrap_or_default()).expect("only_resizes() rules out gravity=auto");
    image.resize((g.out_width, g.out_height), g.window, focus)
}

/// The encoding to send: the one asked for, or for `auto`, Cloudflare's
/// order by `Accept`: AVIF where `avif` allows it and the client takes it,
/// WebP (lossy, alpha kept) where the client takes that, else JPEG, or PNG
/// for transparency, which JPEG cannot carry. `avif` is whether this image
/// may be AVIF here (the route's opt-in, opaque, within AVIF's size cap);
/// where it may not, `format=avif` falls back to WebP, as on Cloudflare.
/// `None` for `json`, which answers no image.
pub fn output_kind(format: Format, has_alpha: bool, accept: &str, avif: bool) -> Option<Kind> {
    Some(match format {
        Format::Json => return None,
        Format::Jpeg => Kind::Jpeg,
        Format::Png => Kind::Png,
        Format::Webp => Kind::Webp,
        Format::Avif if avif => Kind::Avif,
        Format::Avif => Kind::Webp,
        Format::Auto if avif && accepts(accept, "image/avif") => Kind::Avif,
        Format::Auto if accepts(accept, "image/webp") => Kind::Webp,
        Format::Auto if has_alpha => Kind::Png,
        Format::Auto => Kind::Jpeg,
    })
}

/// Whether a client with this `Accept` takes an image of type `mime` as it
/// is: named, or for PNG and JPEG (which every image client decodes) under
/// `image/*`, `*/*` or no `Accept` at all, unless named with `q=0`. WebP
/// only when named: an old browser's `image/*` does not mean it decodes WebP.
pub fn takes_as_is(accept: &str, mime: &str) -> bool {
    match named(accept, mime) {
        Some(weighted) => weighted,
        None => mime != Kind::Webp.mime() && (accept.trim().is_empty() || accepts(accept, "image/*") || accepts(accept, "*/*")),
    }
}

/// Whether an `Accept` header names `mime` with a non-zero weight.
pub fn accepts(accept: &str, mime: &str) -> bool {
    named(accept, mime) == Some(true)
}

/// `Some(weight > 0)` if `Accept` names `mime`, `None` if it does not.
fn named(accept: &str, mime: &str) -> Option<bool> {
    accept.split(',').find_map(|item| {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let refused = parts.any(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()).is_some_and(|q| q == 0.0));
        name.eq_ignore_ascii_case(mime).then_some(!refused)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_resize_may_skip_rgb() {
        let t = |list: &str| Transform::parse_list(list).unwrap();
        for list in ["", "width=200", "width=100,height=300,fit=cover,gravity=0.2x0.8", "width=150,dpr=2,fit=crop", "quality=60,format=webp", "rotate=0,sharpen=0"] {
            assert!(only_resizes(&t(list)), "{list}");
        }
        for list in ["trim=10;20;30;40", "flip=h", "rotate=90", "width=300,height=300,fit=pad", "width=100,height=300,fit=cover,gravity=auto", "blur=8", "sharpen=2", "brightness=1.3", "contrast=1.5", "gamma=2", "saturation=0"] {
            assert!(!only_resizes(&t(list)), "{list}");
        }
    }

    #[test]
    fn a_stored_original_goes_as_it_is_only_to_a_client_that_takes_its_type() {
        let chromium = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        assert!(takes_as_is(chromium, "image/png") && takes_as_is(chromium, "image/webp"));
        assert!(takes_as_is("*/*", "image/png") && takes_as_is("", "image/jpeg"));
        assert!(!takes_as_is("image/jpeg", "image/png"), "a JPEG-only client gets no PNG");
        assert!(!takes_as_is("image/*", "image/webp") && !takes_as_is("*/*", "image/webp"), "WebP only when named");
        assert!(!takes_as_is("image/png;q=0, */*", "image/png"), "refused by name");
    }

    #[test]
    fn the_output_size_cap_names_the_option_that_broke_it() {
        let t = Transform::parse_list("width=4000,height=4000,fit=squeeze").unwrap();
        assert_eq!(output_size(&t, (100, 100), 1_000_000).unwrap_err().option, "width");
        let t = Transform::parse_list("width=800,height=800,fit=squeeze,dpr=2").unwrap();
        assert_eq!(output_size(&t, (100, 100), 1_000_000).unwrap_err().option, "dpr");
        assert_eq!(output_size(&t, (100, 100), 4_000_000), Ok((1600, 1600)));
        let t = Transform::parse_list("trim=50;0;50;0").unwrap();
        assert_eq!(output_size(&t, (100, 100), 1 << 20).unwrap_err().option, "trim");
    }

    #[test]
    fn rotation_swaps_the_axes_that_width_and_height_refer_to() {
        let t = Transform::parse_list("rotate=90").unwrap();
        assert_eq!(output_size(&t, (300, 100), 1 << 20), Ok((100, 300)));
        let image = apply(Raster::filled(300, 100, 3, &[1, 2, 3]), &Transform::parse_list("rotate=90,width=50").unwrap());
        assert_eq!((image.width, image.height), (50, 150));
    }

    #[test]
    fn auto_format_follows_alpha_and_accept() {
        assert_eq!(output_kind(Format::Auto, false, "image/webp,*/*", false), Some(Kind::Webp));
        assert_eq!(output_kind(Format::Auto, false, "*/*", false), Some(Kind::Jpeg));
        assert_eq!(output_kind(Format::Auto, false, "image/png,image/*", false), Some(Kind::Jpeg));
        assert_eq!(output_kind(Format::Auto, true, "image/avif,image/webp,*/*", false), Some(Kind::Webp));
        assert_eq!(output_kind(Format::Auto, true, "image/webp;q=0,*/*", false), Some(Kind::Png));
        assert_eq!(output_kind(Format::Png, false, "", false), Some(Kind::Png));
        assert_eq!(output_kind(Format::Json, false, "image/webp", false), None);
        // Where AVIF is allowed for this image: first for clients that take it.
        assert_eq!(output_kind(Format::Auto, false, "image/avif,image/webp,*/*", true), Some(Kind::Avif));
        assert_eq!(output_kind(Format::Auto, false, "image/webp,*/*", true), Some(Kind::Webp));
        assert_eq!(output_kind(Format::Auto, false, "*/*", true), Some(Kind::Jpeg));
        assert_eq!(output_kind(Format::Avif, false, "*/*", true), Some(Kind::Avif));
        assert_eq!(output_kind(Format::Avif, false, "*/*", false), Some(Kind::Webp), "falls back to WebP, as on Cloudflare");
    }
}
