//! Transform options in Cloudflare Images' grammar: `width=800,fit=cover`
//! in a `/cdn-cgi/image/<options>/` path, or the same keys as query
//! parameters. Parsing is strict: an unknown option or a bad value is an
//! error that names the option, never a silent default.

use std::fmt::Write as _;

/// A refusal that names the option at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    pub option: String,
    pub message: String,
}

impl OptionError {
    pub fn new(option: &str, message: impl Into<String>) -> Self {
        OptionError { option: option.to_owned(), message: message.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fit {
    #[default]
    ScaleDown,
    Contain,
    Cover,
    Crop,
    Pad,
    Squeeze,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Gravity {
    #[default]
    Center,
    /// The most detailed part of the image survives the crop.
    Auto,
    /// Fractions 0–1 of the overflow cut from the left and top: `0x0` keeps
    /// the top-left corner, `0.5x0.5` is the centre.
    Point(f32, f32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The best the client's `Accept` allows.
    #[default]
    Auto,
    Jpeg,
    Png,
    /// Lossy WebP (VP8), or lossless (VP8L) at `quality=100`.
    Webp,
    /// AVIF on routes that allow it (`avif = true`), WebP elsewhere, as
    /// Cloudflare falls back.
    Avif,
    /// Cloudflare's metadata answer instead of an image: the output's size,
    /// the original's size, type and file size.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    Horizontal,
    Vertical,
    Both,
}

/// What to do with EXIF and colour metadata. Our encoders write none, so
/// every value strips it; the option is accepted for compatibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metadata {
    #[default]
    Copyright,
    Keep,
    None,
}

/// Every option a request can set; `None` means not given.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transform {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Option<Fit>,
    pub gravity: Option<Gravity>,
    pub dpr: Option<f32>,
    pub quality: Option<u8>,
    pub format: Option<Format>,
    pub blur: Option<f32>,
    pub sharpen: Option<f32>,
    pub brightness: Option<f32>,
    pub contrast: Option<f32>,
    pub gamma: Option<f32>,
    pub saturation: Option<f32>,
    pub rotate: Option<u16>,
    pub flip: Option<Flip>,
    /// RGBA.
    pub background: Option<[u8; 4]>,
    /// Pixels cut off the source: top, right, bottom, left.
    pub trim: Option<[u32; 4]>,
    pub metadata: Option<Metadata>,
}

/// The largest width or height an option may ask for (Cloudflare's limit).
pub const MAX_SIDE: u32 = 12_000;
pub const DEFAULT_QUALITY: u8 = 85;

impl Transform {
    /// `width=800,height=600,fit=cover` (the `/cdn-cgi/image/` segment).
    pub fn parse_list(list: &str) -> Result<Transform, OptionError> {
        let mut t = Transform::default();
        for item in list.split(',').filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once('=').ok_or_else(|| OptionError::new(item, "options are key=value, separated by commas"))?;
            t.set(key, &decode(value))?;
        }
        Ok(t)
    }

    /// Sets one option from its text. Later settings of the same option win.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), OptionError> {
        let err = |message: &str| OptionError::new(key, message);
        match key {
            "width" | "w" => self.width = Some(side(key, value)?),
            "height" | "h" => self.height = Some(side(key, value)?),
            "fit" => {
                self.fit = Some(match value {
                    "scale-down" => Fit::ScaleDown,
                    "contain" => Fit::Contain,
                    "cover" => Fit::Cover,
                    "crop" => Fit::Crop,
                    "pad" => Fit::Pad,
                    "squeeze" => Fit::Squeeze,
                    _ => return Err(err("must be scale-down, contain, cover, crop, pad or squeeze")),
                })
            }
            "gravity" | "g" => self.gravity = Some(gravity(value).ok_or_else(|| err("must be center, auto, left, right, top, bottom, or XxY with fractions 0 to 1 (0.5x0.33)"))?),
            "dpr" => self.dpr = Some(number(key, value, 0.1, 2.0)?),
            "quality" | "q" => {
                self.quality = Some(match value {
                    "high" => 90,
                    "medium-high" => 75,
                    "medium-low" => 55,
                    "low" => 35,
                    _ => value.parse::<u8>().ok().filter(|q| (1..=100).contains(q)).ok_or_else(|| err("must be 1 to 100, or high, medium-high, medium-low, low"))?,
                })
            }
            "format" | "f" => {
                self.format = Some(match value {
                    "auto" => Format::Auto,
                    "jpeg" | "jpg" | "baseline-jpeg" => Format::Jpeg,
                    "png" | "png-force" => Format::Png,
                    "webp" => Format::Webp,
                    "json" => Format::Json,
                    "avif" => Format::Avif,
                    "svg" => return Err(err("svg is not produced here; use auto, avif, jpeg, png, webp or json")),
                    _ => return Err(err("must be auto, avif, jpeg, png, webp or json")),
                })
            }
            "blur" => self.blur = Some(number(key, value, 1.0, 250.0)?),
            "sharpen" => self.sharpen = Some(number(key, value, 0.0, 10.0)?),
            "brightness" => self.brightness = Some(number(key, value, 0.0, 10.0)?),
            "contrast" => self.contrast = Some(number(key, value, 0.0, 10.0)?),
            "gamma" => self.gamma = Some(number(key, value, 0.01, 10.0)?),
            "saturation" => self.saturation = Some(number(key, value, 0.0, 10.0)?),
            "rotate" => {
                self.rotate = Some(match value {
                    "0" | "360" => 0,
                    "90" => 90,
                    "180" => 180,
                    "270" => 270,
                    _ => return Err(err("must be 90, 180 or 270 (degrees clockwise)")),
                })
            }
            "flip" => {
                self.flip = Some(match value {
                    "h" => Flip::Horizontal,
                    "v" => Flip::Vertical,
                    "hv" | "vh" => Flip::Both,
                    _ => return Err(err("must be h, v or hv")),
                })
            }
            "background" => self.background = Some(colour(value).ok_or_else(|| err("must be a CSS colour: #rgb, #rrggbb, #rrggbbaa, rgb(r,g,b), rgba(r,g,b,a) or a colour name"))?),
            "trim" => self.trim = Some(trim(value).ok_or_else(|| err("must be top;right;bottom;left in pixels (trim=10;0;10;0)"))?),
            "metadata" => {
                self.metadata = Some(match value {
                    "copyright" => Metadata::Copyright,
                    "keep" => Metadata::Keep,
                    "none" => Metadata::None,
                    _ => return Err(err("must be copyright, keep or none")),
                })
            }
            _ => return Err(OptionError::new(key, "is not an option; see the gallery page for the list")),
        }
        Ok(())
    }

    /// `self` with every option `other` sets taken from `other`.
    pub fn overlay(mut self, other: &Transform) -> Transform {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(width, height, fit, gravity, dpr, quality, format, blur, sharpen, brightness, contrast, gamma, saturation, rotate, flip, background, trim, metadata);
        self
    }

    /// One string per distinct transform, in a fixed order with normalised
    /// values: the variant's cache key and ETag depend on it.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        let mut put = |k: &str, v: String| {
            if !out.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "{k}={v}");
        };
        if let Some(v) = self.width { put("width", v.to_string()) }
        if let Some(v) = self.height { put("height", v.to_string()) }
        if let Some(v) = self.fit { put("fit", format!("{v:?}")) }
        if let Some(v) = self.gravity { put("gravity", format!("{v:?}")) }
        if let Some(v) = self.dpr { put("dpr", v.to_string()) }
        if let Some(v) = self.quality { put("quality", v.to_string()) }
        if let Some(v) = self.format { put("format", format!("{v:?}")) }
        for (k, v) in [("blur", self.blur), ("sharpen", self.sharpen), ("brightness", self.brightness), ("contrast", self.contrast), ("gamma", self.gamma), ("saturation", self.saturation)] {
            if let Some(v) = v { put(k, v.to_string()) }
        }
        if let Some(v) = self.rotate { put("rotate", v.to_string()) }
        if let Some(v) = self.flip { put("flip", format!("{v:?}")) }
        if let Some([r, g, b, a]) = self.background { put("background", format!("{r:02x}{g:02x}{b:02x}{a:02x}")) }
        if let Some([t, r, b, l]) = self.trim { put("trim", format!("{t};{r};{b};{l}")) }
        if let Some(v) = self.metadata { put("metadata", format!("{v:?}")) }
        out
    }
}

fn decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned()
}

fn side(key: &str, value: &str) -> Result<u32, OptionError> {
    value.parse::<u32>().ok().filter(|v| (1..=MAX_SIDE).contains(v)).ok_or_else(|| OptionError::new(key, format!("must be a whole number of pixels from 1 to {MAX_SIDE}")))
}

fn number(key: &str, value: &str, min: f32, max: f32) -> Result<f32, OptionError> {
    value
        .parse::<f32>()
        .ok()
        .filter(|v| v.is_finite() && (min..=max).contains(v))
        .ok_or_else(|| OptionError::new(key, format!("must be a number from {min} to {max}")))
}

fn gravity(value: &str) -> Option<Gravity> {
    Some(match value {
        "center" | "centre" => Gravity::Center,
        "auto" => Gravity::Auto,
        "left" => Gravity::Point(0.0, 0.5),
        "right" => Gravity::Point(1.0, 0.5),
        "top" => Gravity::Point(0.5, 0.0),
        "bottom" => Gravity::Point(0.5, 1.0),
        _ => {
            let (x, y) = value.split_once('x')?;
            let fraction = |s: &str| s.parse::<f32>().ok().filter(|v| v.is_finite() && (0.0..=1.0).contains(v));
            Gravity::Point(fraction(x)?, fraction(y)?)
        }
    })
}

fn trim(value: &str) -> Option<[u32; 4]> {
    let parts: Vec<u32> = value.split(';').map(|p| p.parse::<u32>().ok().filter(|v| *v <= MAX_SIDE)).collect::<Option<_>>()?;
    parts.try_into().ok()
}

/// CSS colours: hex forms, `rgb()`/`rgba()` and the common names.
pub fn colour(value: &str) -> Option<[u8; 4]> {
    let value = value.trim().to_ascii_lowercase();
    if let Some(hex) = value.strip_prefix('#') {
        let nibble = |i: usize| u8::from_str_radix(hex.get(i..i + 1)?, 16).ok();
        let byte = |i: usize| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok();
        return match hex.len() {
            3 => Some([nibble(0)? * 17, nibble(1)? * 17, nibble(2)? * 17, 255]),
            6 => Some([byte(0)?, byte(2)?, byte(4)?, 255]),
            8 => Some([byte(0)?, byte(2)?, byte(4)?, byte(6)?]),
            _ => None,
        };
    }
    if let Some(args) = value.strip_prefix("rgba(").or_else(|| value.strip_prefix("rgb(")).and_then(|a| a.strip_suffix(')')) {
        let parts: Vec<&str> = args.split(',').map(str::trim).collect();
        let channel = |s: &str| s.parse::<u8>().ok();
        return match parts.as_slice() {
            [r, g, b] => Some([channel(r)?, channel(g)?, channel(b)?, 255]),
            [r, g, b, a] => {
                let a = a.parse::<f32>().ok().filter(|a| (0.0..=1.0).contains(a))?;
                Some([channel(r)?, channel(g)?, channel(b)?, (a * 255.0).round() as u8])
            }
            _ => None,
        };
    }
    Some(match value.as_str() {
        "white" => [255, 255, 255, 255],
        "black" => [0, 0, 0, 255],
        "red" => [255, 0, 0, 255],
        "green" => [0, 128, 0, 255],
        "lime" => [0, 255, 0, 255],
        "blue" => [0, 0, 255, 255],
        "yellow" => [255, 255, 0, 255],
        "cyan" | "aqua" => [0, 255, 255, 255],
        "magenta" | "fuchsia" => [255, 0, 255, 255],
        "gray" | "grey" => [128, 128, 128, 255],
        "silver" => [192, 192, 192, 255],
        "orange" => [255, 165, 0, 255],
        "purple" => [128, 0, 128, 255],
        "pink" => [255, 192, 203, 255],
        "transparent" => [0, 0, 0, 0],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_sets_each_option_and_aliases_mean_the_same() {
        let t = Transform::parse_list("w=400,h=300,fit=cover,g=0.2x0.8,q=70,f=png,blur=5,rotate=90,flip=hv,trim=1;2;3;4,background=%23ff0000").unwrap();
        assert_eq!((t.width, t.height, t.fit, t.quality, t.format), (Some(400), Some(300), Some(Fit::Cover), Some(70), Some(Format::Png)));
        assert_eq!(t.gravity, Some(Gravity::Point(0.2, 0.8)));
        assert_eq!((t.rotate, t.flip, t.trim, t.background), (Some(90), Some(Flip::Both), Some([1, 2, 3, 4]), Some([255, 0, 0, 255])));
        assert_eq!(t.canonical(), Transform::parse_list("width=400,height=300,fit=cover,gravity=0.2x0.8,quality=70,format=png,blur=5,rotate=90,flip=vh,trim=1;2;3;4,background=red").unwrap().canonical());
    }

    #[test]
    fn every_bad_value_names_its_option() {
        for (list, option) in [
            ("width=0", "width"),
            ("width=abc", "width"),
            ("height=99999", "height"),
            ("fit=stretch", "fit"),
            ("gravity=2x0", "gravity"),
            ("dpr=5", "dpr"),
            ("quality=0", "quality"),
            ("format=svg", "format"),
            ("blur=0", "blur"),
            ("sharpen=11", "sharpen"),
            ("brightness=-1", "brightness"),
            ("gamma=nan", "gamma"),
            ("rotate=45", "rotate"),
            ("flip=x", "flip"),
            ("background=notacolour", "background"),
            ("trim=1;2", "trim"),
            ("metadata=all", "metadata"),
            ("zoom=1", "zoom"),
            ("width", "width"),
        ] {
            assert_eq!(Transform::parse_list(list).unwrap_err().option, option, "{list}");
        }
    }

    #[test]
    fn css_colours() {
        assert_eq!(colour("#abc"), Some([0xaa, 0xbb, 0xcc, 255]));
        assert_eq!(colour("rgb(1, 2, 3)"), Some([1, 2, 3, 255]));
        assert_eq!(colour("rgba(1,2,3,0.5)"), Some([1, 2, 3, 128]));
        assert_eq!(colour("transparent"), Some([0, 0, 0, 0]));
        assert_eq!(colour("#12345"), None);
    }
}
