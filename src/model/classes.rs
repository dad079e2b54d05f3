//! The class table of a model: one name and one palette colour per output channel, and the
//! Cityscapes table used when a model says nothing about its classes.

use std::path::Path;

use super::ModelError;

/// One Cityscapes evaluation class; its train id is its index in [`CITYSCAPES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CityscapesClass {
    pub name: &'static str,
    /// The official colour (`cityscapesscripts.helpers.labels`).
    pub color: [u8; 3],
    /// The label id, as in `gtFine/*_labelIds.png`: what `cityscapesscripts` expects in
    /// prediction files.
    pub label_id: u8,
}

const fn class(name: &'static str, color: [u8; 3], label_id: u8) -> CityscapesClass {
    CityscapesClass { name, color, label_id }
}

/// The 19 Cityscapes evaluation classes, in train-id order: the one table of their names,
/// colours and label ids.
pub const CITYSCAPES: [CityscapesClass; 19] = [
    class("road", [128, 64, 128], 7),
    class("sidewalk", [244, 35, 232], 8),
    class("building", [70, 70, 70], 11),
    class("wall", [102, 102, 156], 12),
    class("fence", [190, 153, 153], 13),
    class("pole", [153, 153, 153], 17),
    class("traffic light", [250, 170, 30], 19),
    class("traffic sign", [220, 220, 0], 20),
    class("vegetation", [107, 142, 35], 21),
    class("terrain", [152, 251, 152], 22),
    class("sky", [70, 130, 180], 23),
    class("person", [220, 20, 60], 24),
    class("rider", [255, 0, 0], 25),
    class("car", [0, 0, 142], 26),
    class("truck", [0, 0, 70], 27),
    class("bus", [0, 60, 100], 28),
    class("train", [0, 80, 100], 31),
    class("motorcycle", [0, 0, 230], 32),
    class("bicycle", [119, 11, 32], 33),
];

/// Train ids by name, for code that draws or checks given classes (`synth://`, tests); each is
/// checked against [`CITYSCAPES`].
pub mod train_id {
    pub const ROAD: u8 = 0;
    pub const SIDEWALK: u8 = 1;
    pub const BUILDING: u8 = 2;
    pub const WALL: u8 = 3;
    pub const FENCE: u8 = 4;
    pub const POLE: u8 = 5;
    pub const TRAFFIC_LIGHT: u8 = 6;
    pub const TRAFFIC_SIGN: u8 = 7;
    pub const VEGETATION: u8 = 8;
    pub const TERRAIN: u8 = 9;
    pub const SKY: u8 = 10;
    pub const PERSON: u8 = 11;
    pub const RIDER: u8 = 12;
    pub const CAR: u8 = 13;
    pub const TRUCK: u8 = 14;
    pub const BUS: u8 = 15;
    pub const TRAIN: u8 = 16;
    pub const MOTORCYCLE: u8 = 17;
    pub const BICYCLE: u8 = 18;
}

/// The label id of each train id (a lookup table made from [`CITYSCAPES`]).
pub const CITYSCAPES_LABEL_IDS: [u8; 19] = {
    let mut ids = [0; 19];
    let mut i = 0;
    while i < ids.len() {
        ids[i] = CITYSCAPES[i].label_id;
        i += 1;
    }
    ids
};

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

/// Why names and colours do not make a class table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassTableError {
    #[error("the class list is empty")]
    Empty,
    #[error("{0} classes do not fit 8-bit label maps (at most {MAX_CLASSES})")]
    TooMany(usize),
    #[error("{names} class names but {colors} palette colours; give one colour per class")]
    PaletteLength { names: usize, colors: usize },
}

impl ClassTable {
    /// A table from names and colours, which must have the same, non-zero length of at most
    /// [`MAX_CLASSES`].
    pub fn new(names: Vec<String>, palette: Vec<[u8; 3]>) -> Result<ClassTable, ClassTableError> {
        if names.is_empty() {
            return Err(ClassTableError::Empty);
        }
        if names.len() > MAX_CLASSES {
            return Err(ClassTableError::TooMany(names.len()));
        }
        if names.len() != palette.len() {
            return Err(ClassTableError::PaletteLength { names: names.len(), colors: palette.len() });
        }
        Ok(ClassTable { names, palette })
    }

    /// The 19 Cityscapes classes with their official colours.
    pub fn cityscapes() -> ClassTable {
        ClassTable {
            names: CITYSCAPES.iter().map(|c| c.name.to_string()).collect(),
            palette: CITYSCAPES.iter().map(|c| c.color).collect(),
        }
    }

    /// The table of a model with `count` classes and no names of its own: Cityscapes' 19, else
    /// [`ClassTable::generic`].
    pub fn for_count(count: usize) -> ClassTable {
        if count == CITYSCAPES.len() { ClassTable::cityscapes() } else { ClassTable::generic(count) }
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
    pub fn from_names(names: Vec<String>) -> Result<ClassTable, ClassTableError> {
        let palette = if is_cityscapes_names(&names) {
            CITYSCAPES.iter().map(|c| c.color).collect()
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
            .map_err(|e| bad(e.to_string()))
        } else {
            let names = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            ClassTable::from_names(names).map_err(|e| bad(e.to_string()))
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
    names.len() == CITYSCAPES.len()
        && names.iter().zip(CITYSCAPES).all(|(a, b)| a.trim().eq_ignore_ascii_case(b.name))
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
    fn train_id_names_match_the_table() {
        use train_id::*;
        let named = [
            (ROAD, "road"),
            (SIDEWALK, "sidewalk"),
            (BUILDING, "building"),
            (WALL, "wall"),
            (FENCE, "fence"),
            (POLE, "pole"),
            (TRAFFIC_LIGHT, "traffic light"),
            (TRAFFIC_SIGN, "traffic sign"),
            (VEGETATION, "vegetation"),
            (TERRAIN, "terrain"),
            (SKY, "sky"),
            (PERSON, "person"),
            (RIDER, "rider"),
            (CAR, "car"),
            (TRUCK, "truck"),
            (BUS, "bus"),
            (TRAIN, "train"),
            (MOTORCYCLE, "motorcycle"),
            (BICYCLE, "bicycle"),
        ];
        assert_eq!(named.len(), CITYSCAPES.len());
        for (id, name) in named {
            assert_eq!(CITYSCAPES[id as usize].name, name);
        }
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
