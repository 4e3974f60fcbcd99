//! FAT volumes made in memory (the `fatfs` crate): the EFI system partition
//! and the ROUTERD-BOOT partition that holds GRUB's `grubenv`.
//!
//! Reproducible: fatfs without its `chrono` feature stamps every entry
//! 1980-01-01 00:00, the volume id comes from the caller (derived from the
//! inputs), and files are written in the order given.
//!
//! The contract with the firmware: in ROUTERD-BOOT, `grubenv` is the only
//! file and is written first, so its 1 KiB occupies the first data cluster;
//! [`find_env_block`] returns where, and the image builder checks it is at
//! [`ENV_BLOCK_OFFSET`], the fixed offset docs/DISK-LAYOUT.md gives the
//! firmware (which has no FAT code) for raw rewrites.

use std::io::{Cursor, Write};

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};

/// Where the env block starts inside ROUTERD-BOOT (bytes): the first data
/// cluster of the 1 MiB FAT12 volume fatfs makes — 1 reserved sector, two
/// 6-sector FATs, a 32-sector root directory: sector 45 (pinned by a test).
pub const ENV_BLOCK_OFFSET: usize = 45 * 512;

/// Formats `volume` (its whole length) as FAT and writes `files`
/// (`path/with/dirs`, contents) into it, creating directories on the way.
pub fn build(volume: &mut [u8], fat_type: FatType, label: &[u8; 11], volume_id: u32, files: &[(&str, &[u8])]) -> std::io::Result<()> {
    volume.fill(0);
    let opts = FormatVolumeOptions::new().fat_type(fat_type).volume_label(*label).volume_id(volume_id);
    fatfs::format_volume(Cursor::new(&mut *volume), opts)?;
    let fs = FileSystem::new(Cursor::new(&mut *volume), FsOptions::new())?;
    {
        let root = fs.root_dir();
        for (path, data) in files {
            let mut dir = root.clone();
            let mut parts: Vec<&str> = path.split('/').collect();
            let name = parts.pop().unwrap_or_default();
            for p in parts {
                dir = match dir.open_dir(p) {
                    Ok(d) => d,
                    Err(_) => dir.create_dir(p)?,
                };
            }
            let mut f = dir.create_file(name)?;
            f.truncate()?;
            f.write_all(data)?;
            f.flush()?;
        }
    }
    fs.unmount()
}

/// Where a GRUB env block starts in `volume`, if there is exactly one.
pub fn find_env_block(volume: &[u8]) -> Option<usize> {
    let sig = b"# GRUB Environment Block\n";
    let mut hits = (0..volume.len()).step_by(512).filter(|&at| volume.get(at..at + sig.len()) == Some(&sig[..]));
    let first = hits.next()?;
    hits.next().is_none().then_some(first)
}

/// Reads a file back (tests).
#[cfg(test)]
pub fn read(volume: &mut [u8], path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let fs = FileSystem::new(Cursor::new(volume), FsOptions::new())?;
    let mut out = Vec::new();
    fs.root_dir().open_file(path)?.read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_block_lands_at_the_documented_offset() {
        let env = crate::image::grub::initial_env();
        let mut v = vec![0xa5u8; 1 << 20];
        build(&mut v, FatType::Fat12, b"ROUTERDBOOT", 7, &[("grubenv", &env)]).unwrap();
        assert_eq!(find_env_block(&v), Some(ENV_BLOCK_OFFSET));
        assert_eq!(&v[ENV_BLOCK_OFFSET..ENV_BLOCK_OFFSET + 1024], &env[..]);
        assert_eq!(read(&mut v, "grubenv").unwrap(), env);
        // Same inputs, same bytes.
        let mut w = vec![0u8; 1 << 20];
        build(&mut w, FatType::Fat12, b"ROUTERDBOOT", 7, &[("grubenv", &env)]).unwrap();
        assert!(v == w);
    }

    #[test]
    fn nested_files_are_readable() {
        let mut v = vec![0u8; 8 << 20];
        build(&mut v, FatType::Fat16, b"EFI-SYSTEM ", 1, &[("EFI/BOOT/BOOTX64.EFI", b"MZ..")]).unwrap();
        assert_eq!(read(&mut v, "EFI/BOOT/BOOTX64.EFI").unwrap(), b"MZ..");
    }
}
