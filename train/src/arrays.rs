//! NumPy files: `.npy` input tensors and `.npz` outputs of `semask-train forward`.

use std::path::Path;

use npyz::WriterBuilder;

/// Shape and values of a float32 `.npy` file (float64 is converted).
pub fn read_npy(path: &Path) -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
    let bytes = fs_err::read(path)?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| anyhow::anyhow!("{} is not a .npy file: {e}", path.display()))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let values = match npy.dtype() {
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 8 => {
            npy.into_vec::<f64>()?.into_iter().map(|v| v as f32).collect()
        }
        _ => npy
            .into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{}: expected float32 values ({e})", path.display()))?,
    };
    Ok((shape, values))
}

/// Writes float32 arrays into an `.npz` archive (complete or not at all).
pub fn write_npz(path: &Path, arrays: &[(&str, &[usize], &[f32])]) -> anyhow::Result<()> {
    let mut archive = std::io::Cursor::new(Vec::new());
    let mut npz = npyz::npz::NpzWriter::new(&mut archive);
    for (name, shape, values) in arrays {
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let mut writer = npz
            .array::<f32>(name, zip::write::FileOptions::default())?
            .default_dtype()
            .shape(&shape)
            .begin_nd()?;
        writer.extend(values.iter().copied())?;
        writer.finish()?;
    }
    npz.zip_writer().finish()?;
    drop(npz);
    semask_edge::files::write_atomically(path, archive.get_ref())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Writes a float32 `.npy` file (complete or not at all).
pub fn write_npy(path: &Path, shape: &[usize], values: &[f32]) -> anyhow::Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut out = Vec::new();
    let mut writer = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(&mut out).begin_nd()?;
    writer.extend(values.iter().copied())?;
    writer.finish()?;
    semask_edge::files::write_atomically(path, &out)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
