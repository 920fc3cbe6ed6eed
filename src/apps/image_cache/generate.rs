//! The built-in generator: with no Replicate token, the zoo draws its own
//! placeholders, so a fresh checkout serves images offline. Deterministic:
//! the same size and slug always give the same pixels (a gradient and a few
//! discs in colours seeded by the slug, with the size and slug written on it).

use super::raster::Raster;

/// A `width`×`height` placeholder for `slug`.
pub fn placeholder(width: u32, height: u32, slug: &str) -> Raster {
    let mut rng = SplitMix(seed(slug));
    let (a, b) = (rng.colour(), rng.colour());
    let (w, h) = (width as usize, height as usize);
    let mut data = Vec::with_capacity(w * h * 3);
    let span = (w + h).max(2) as f32 - 2.0;
    for y in 0..h {
        for x in 0..w {
            let t = if span > 0.0 { (x + y) as f32 / span } else { 0.0 };
            data.extend((0..3).map(|k| (f32::from(a[k]) * (1.0 - t) + f32::from(b[k]) * t) as u8));
        }
    }
    let mut image = Raster::new(width, height, 3, data);
    for _ in 0..5 {
        let (cx, cy) = (rng.below(width) as i64, rng.below(height) as i64);
        let r = (rng.below(width.min(height) / 4 + 1) + width.min(height) / 12) as i64;
        disc(&mut image, cx, cy, r, rng.colour());
    }
    let size = format!("{width}x{height}");
    let lines = [size.as_str(), slug];
    let scale = lines.iter().map(|l| text_scale(l, width, height)).min().unwrap_or(1);
    let line_height = 10 * scale as i64;
    let top = height as i64 / 2 - line_height;
    for (i, line) in lines.iter().enumerate() {
        let text_width = 8 * scale as i64 * line.chars().count() as i64;
        let (x, y) = ((width as i64 - text_width) / 2, top + i as i64 * line_height);
        let shadow = (scale as i64 / 2).max(1);
        text(&mut image, x + shadow, y + shadow, scale, line, [0, 0, 0]);
        text(&mut image, x, y, scale, line, [255, 255, 255]);
    }
    image
}

/// FNV-1a of the slug: stable across builds and hosts.
fn seed(slug: &str) -> u64 {
    slug.bytes().fold(0xcbf29ce484222325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

/// SplitMix64: a few well-spread numbers from one seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n.max(1))) as u32
    }

    fn colour(&mut self) -> [u8; 3] {
        let v = self.next();
        [(v >> 8) as u8 | 0x20, (v >> 24) as u8 | 0x20, (v >> 40) as u8 | 0x20]
    }
}

fn disc(image: &mut Raster, cx: i64, cy: i64, r: i64, colour: [u8; 3]) {
    let (w, h) = (i64::from(image.width), i64::from(image.height));
    for y in (cy - r).max(0)..(cy + r).min(h) {
        for x in (cx - r).max(0)..(cx + r).min(w) {
            if (x - cx).pow(2) + (y - cy).pow(2) <= r * r {
                let at = ((y * w + x) * 3) as usize;
                image.data[at..at + 3].copy_from_slice(&colour);
            }
        }
    }
}

/// The largest whole scale of the 8×8 font at which `line` fits in 80% of
/// the width and a fifth of the height.
fn text_scale(line: &str, width: u32, height: u32) -> u32 {
    let chars = line.chars().count().max(1) as u32;
    (width * 8 / 10 / (8 * chars)).min(height / 5 / 8).max(1)
}

fn text(image: &mut Raster, x0: i64, y0: i64, scale: u32, line: &str, colour: [u8; 3]) {
    let (w, h) = (i64::from(image.width), i64::from(image.height));
    let s = i64::from(scale);
    for (i, ch) in line.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY.get(ch as usize).copied().unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 0 {
                    continue;
                }
                let (px, py) = (x0 + (i as i64 * 8 + col) * s, y0 + row as i64 * s);
                for y in py.max(0)..(py + s).min(h) {
                    for x in px.max(0)..(px + s).min(w) {
                        let at = ((y * w + x) * 3) as usize;
                        image.data[at..at + 3].copy_from_slice(&colour);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_deterministic_and_differ_by_slug() {
        let a = placeholder(120, 80, "sloth");
        assert_eq!(a, placeholder(120, 80, "sloth"));
        assert_ne!(a, placeholder(120, 80, "goat"));
        assert_eq!((a.width, a.height, a.data.len()), (120, 80, 120 * 80 * 3));
        let tiny = placeholder(16, 16, "a-very-long-slug-that-cannot-fit");
        assert_eq!(tiny.data.len(), 16 * 16 * 3);
    }
}
