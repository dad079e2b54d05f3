//! The class table of a model: one name and one palette colour per output channel, and the
//! Cityscapes table used when a model says nothing about its classes.

use std::path::Path;

use super::ModelError;

/// The 19 Cityscapes evaluation classes, in train-id order.
pub const CITYSCAPES_CLASSES: [&str; 19] = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
];

/// The official colour of each Cityscapes train id (`cityscapesscripts.helpers.labels`).
pub const CITYSCAPES_PALETTE: [[u8; 3]; 19] = [
    [128, 64, 128],
    [244, 35, 232],
    [70, 70, 70],
    [102, 102, 156],
    [190, 153, 153],
    [153, 153, 153],
    [250, 170, 30],
    [220, 220, 0],
    [107, 142, 35],
    [152, 251, 152],
    [70, 130, 180],
    [220, 20, 60],
    [255, 0, 0],
    [0, 0, 142],
    [0, 0, 70],
    [0, 60, 100],
    [0, 80, 100],
    [0, 0, 230],
    [119, 11, 32],
];

/// The Cityscapes label id (as in `gtFine/*_labelIds.png`) of each train id; what
/// `cityscapesscripts` expects in prediction files.
pub const CITYSCAPES_LABEL_IDS: [u8; 19] =
    [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33];

/// Class names and colours, index = class index of the logits channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClassTable {
    names: Vec<String>,
    palette: Vec<[u8; 3]>,
}

/// Largest class count a label map can hold (8-bit label PNGs).
pub const MAX_CLASSES: usize = 256;

/// Largest `--classes` file read (256 names and colours fit in a few kilobytes).
const MAX_CLASS_FILE_BYTES: u64 = 1 << 20;

/// What kind of JSON value `v` is, for messages.
fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list of something else",
        serde_json::Value::Object(_) => "an object",
    }
}

impl ClassTable {
    /// A table from names and colours, which must have the same, non-zero length of at most
    /// [`MAX_CLASSES`].
    pub fn new(names: Vec<String>, palette: Vec<[u8; 3]>) -> Result<ClassTable, String> {
        if names.is_empty() {
            return Err("the class list is empty".into());
        }
        if names.len() > MAX_CLASSES {
            return Err(format!(
                "{} classes do not fit 8-bit label maps (at most {MAX_CLASSES})",
                names.len()
            ));
        }
        if names.len() != palette.len() {
            return Err(format!(
                "{} class names but {} palette colours; give one colour per class",
                names.len(),
                palette.len()
            ));
        }
        Ok(ClassTable { names, palette })
    }

    /// The 19 Cityscapes classes with their official colours.
    pub fn cityscapes() -> ClassTable {
        ClassTable {
            names: CITYSCAPES_CLASSES.iter().map(|s| s.to_string()).collect(),
            palette: CITYSCAPES_PALETTE.to_vec(),
        }
    }

    /// The table of a model with `count` classes and no names of its own: Cityscapes' 19, else
    /// [`ClassTable::generic`].
    pub fn for_count(count: usize) -> ClassTable {
        if count == CITYSCAPES_CLASSES.len() { ClassTable::cityscapes() } else { ClassTable::generic(count) }
    }

    /// `count` classes named `class_0`, `class_1`… with [`generated_palette`] colours.
    pub fn generic(count: usize) -> ClassTable {
        ClassTable {
            names: (0..count).map(|i| format!("class_{i}")).collect(),
            palette: generated_palette(count),
        }
    }

    /// Names only: the Cityscapes colours when the names are the Cityscapes classes, generated
    /// colours otherwise.
    pub fn from_names(names: Vec<String>) -> Result<ClassTable, String> {
        let palette = if is_cityscapes_names(&names) {
            CITYSCAPES_PALETTE.to_vec()
        } else {
            generated_palette(names.len())
        };
        ClassTable::new(names, palette)
    }

    /// Reads a class file given with `--classes`: a JSON list of names, a JSON object
    /// `{"classes": [...], "palette": [[r,g,b], ...]}`, or plain text with one name per line
    /// (blank lines and `#` comments skipped).
    pub fn from_file(path: &Path) -> Result<ClassTable, ModelError> {
        let bad = |reason: String| ModelError::ClassFile { path: path.to_path_buf(), reason };
        let mut bytes = Vec::new();
        crate::files::read_input(path, MAX_CLASS_FILE_BYTES, &mut bytes).map_err(|e| bad(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| bad("is not UTF-8 text".into()))?;
        ClassTable::from_text(&text, path)
    }

    /// Parses a class file's text (see [`ClassTable::from_file`]); `path` names it in errors.
    pub fn from_text(text: &str, path: &Path) -> Result<ClassTable, ModelError> {
        let bad = |reason: String| ModelError::ClassFile { path: path.to_path_buf(), reason };
        // Editors on Windows start UTF-8 files with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let trimmed = text.trim_start();
        if trimmed.starts_with('[') || trimmed.starts_with('{') {
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|e| bad(format!("is not valid JSON: {e}")))?;
            let (names, palette) = match &value {
                serde_json::Value::Array(_) => (&value, None),
                serde_json::Value::Object(map) => {
                    if let Some(key) = map.keys().find(|k| *k != "classes" && *k != "palette") {
                        return Err(bad(format!(
                            "unknown key {key:?}; the object takes \"classes\" and \"palette\""
                        )));
                    }
                    let names = map.get("classes").ok_or_else(|| {
                        bad("the object has no \"classes\" list; write {\"classes\": [\"road\", ...]}".into())
                    })?;
                    (names, map.get("palette"))
                }
                _ => unreachable!("starts with [ or {{"),
            };
            let names: Vec<String> = serde_json::from_value(names.clone()).map_err(|_| {
                bad(format!("\"classes\" must be a list of names (strings), found {}", json_kind(names)))
            })?;
            match palette {
                None => ClassTable::from_names(names),
                Some(p) => {
                    let palette: Vec<[u8; 3]> = serde_json::from_value(p.clone()).map_err(|_| {
                        bad("\"palette\" must be a list of [r, g, b] colours with values 0-255".into())
                    })?;
                    ClassTable::new(names, palette)
                }
            }
            .map_err(bad)
        } else {
            let names = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            ClassTable::from_names(names).map_err(bad)
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn palette(&self) -> &[[u8; 3]] {
        &self.palette
    }

    /// True when the classes are the 19 Cityscapes train-id classes, in order, so that
    /// [`CITYSCAPES_LABEL_IDS`] applies.
    pub fn is_cityscapes(&self) -> bool {
        is_cityscapes_names(&self.names)
    }
}

fn is_cityscapes_names(names: &[String]) -> bool {
    names.len() == CITYSCAPES_CLASSES.len()
        && names.iter().zip(CITYSCAPES_CLASSES).all(|(a, b)| a.trim().eq_ignore_ascii_case(b))
}

/// Distinct, deterministic colours for `count` classes: the PASCAL VOC bit-interleaved colour
/// map (class 0 is black), which mmseg and torchvision also use for unnamed classes.
pub fn generated_palette(count: usize) -> Vec<[u8; 3]> {
    (0..count)
        .map(|class| {
            let mut rgb = [0u8; 3];
            let mut c = class;
            for bit in (0..8).rev() {
                for (channel, value) in rgb.iter_mut().enumerate() {
                    *value |= (((c >> channel) & 1) as u8) << bit;
                }
                c >>= 3;
            }
            rgb
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cityscapes_table_is_consistent() {
        let t = ClassTable::cityscapes();
        assert_eq!(t.len(), 19);
        assert!(t.is_cityscapes());
        assert_eq!(t.palette()[13], [0, 0, 142]); // car
        assert_eq!(CITYSCAPES_LABEL_IDS[13], 26);
        assert!(!ClassTable::generic(19).is_cityscapes());
    }

    #[test]
    fn voc_palette_starts_as_expected() {
        let p = generated_palette(4);
        assert_eq!(p, vec![[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]);
        let many = generated_palette(256);
        let unique: std::collections::HashSet<_> = many.iter().collect();
        assert_eq!(unique.len(), 256);
    }

    #[test]
    fn table_rejects_mismatched_lengths_and_empty_lists() {
        assert!(ClassTable::new(vec!["a".into()], vec![]).is_err());
        assert!(ClassTable::new(vec![], vec![]).is_err());
        assert!(ClassTable::new(vec!["x".into(); 257], vec![[0; 3]; 257]).is_err());
    }

    #[test]
    fn class_files_in_three_forms() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("c.json");
        std::fs::write(&json, r#"["a", "b"]"#).unwrap();
        assert_eq!(ClassTable::from_file(&json).unwrap().names(), ["a", "b"]);

        let obj = dir.path().join("o.json");
        std::fs::write(&obj, r#"{"classes": ["a", "b"], "palette": [[1,2,3],[4,5,6]]}"#).unwrap();
        assert_eq!(ClassTable::from_file(&obj).unwrap().palette(), [[1, 2, 3], [4, 5, 6]]);

        let txt = dir.path().join("c.txt");
        std::fs::write(&txt, "# comment\nroad\n\nsidewalk\n").unwrap();
        assert_eq!(ClassTable::from_file(&txt).unwrap().names(), ["road", "sidewalk"]);

        let broken = dir.path().join("b.json");
        std::fs::write(&broken, r#"{"classes": 3}"#).unwrap();
        let err = ClassTable::from_file(&broken).unwrap_err().to_string();
        assert!(err.contains("b.json"), "{err}");
    }
}
