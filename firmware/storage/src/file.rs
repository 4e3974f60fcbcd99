//! A [`BlockDevice`] over a regular file (feature `std`): how a host keeps
//! the same store the image keeps on its partition — routerd-host's
//! `--state-dir DIR/state` — so a state file and a partition image hold the
//! same bytes and the same tooling reads both.
//!
//! Contract: the file's size is fixed when it is created ([`FileDisk::create`],
//! zero-filled, so later writes never need new space) and must be a
//! non-zero whole number of 4096-byte blocks when opened
//! ([`FileDisk::open`] refuses anything else, naming the size). `write` is
//! `pwrite` (in the page cache: the volatile write cache of the trait's
//! contract), `flush` is `fdatasync`. Creating the file also syncs its
//! directory, so the new name survives a power cut with its contents.
//!
//! It lives here, beside the trait and the in-memory test disks, rather than
//! in routerd-host: it is the trait's host implementation, and any host tool
//! that wants to read a state file (or a copied partition) needs exactly it.

extern crate std;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::{BlockDevice, BlockError, BlockSize, Region, STORE_BYTES};

/// The block size of a file device.
pub const FILE_BLOCK: BlockSize = BlockSize::B4096;
/// The size of a state file [`FileDisk::create`] makes by default: the
/// store (140 KiB) rounded up with room for a later format.
pub const STATE_FILE_BYTES: u64 = 256 * 1024;
const _: () = assert!(STATE_FILE_BYTES >= STORE_BYTES && STATE_FILE_BYTES.is_multiple_of(4096));

/// A regular file as a block device.
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    blocks: u64,
}

impl FileDisk {
    /// Opens an existing file for reading and writing. Refused (as
    /// `InvalidData`, naming the size) unless its length is a non-zero
    /// multiple of 4096 bytes.
    pub fn open(path: &Path) -> io::Result<FileDisk> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
        }
        let len = meta.len();
        let block = FILE_BLOCK.bytes() as u64;
        if len == 0 || !len.is_multiple_of(block) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                std::format!("{len} bytes is not a whole number of {block}-byte blocks (a state file is made {STATE_FILE_BYTES} bytes)"),
            ));
        }
        Ok(FileDisk { file, blocks: len / block })
    }

    /// Creates a new file of `bytes` (rounded up to whole blocks) filled
    /// with zeros, mode 0600 (it will hold keys), synced with its directory.
    /// Refused if the file exists.
    pub fn create(path: &Path, bytes: u64) -> io::Result<FileDisk> {
        let block = FILE_BLOCK.bytes() as u64;
        let blocks = bytes.div_ceil(block).max(1);
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path)?;
        // Real zeros rather than a hole: a save must not fail for want of space.
        let zeros = [0u8; 4096];
        for b in 0..blocks {
            file.write_all_at(&zeros, b * block)?;
        }
        file.sync_all()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(FileDisk { file, blocks })
    }

    /// The whole file as the store's region.
    pub fn region(&self) -> Region {
        Region { first_lba: 0, blocks: self.blocks }
    }

    /// Byte offset and length of a request, checked against the file.
    fn span(&self, lba: u64, len: usize) -> Result<u64, BlockError> {
        let block = FILE_BLOCK.bytes();
        if len == 0 || !len.is_multiple_of(block) {
            return Err(BlockError::BadLength);
        }
        let count = (len / block) as u64;
        match lba.checked_add(count) {
            Some(end) if end <= self.blocks => lba.checked_mul(block as u64).ok_or(BlockError::OutOfRange),
            _ => Err(BlockError::OutOfRange),
        }
    }
}

impl BlockDevice for FileDisk {
    fn block_size(&self) -> BlockSize {
        FILE_BLOCK
    }

    fn block_count(&self) -> u64 {
        self.blocks
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let at = self.span(lba, buf.len())?;
        self.file.read_exact_at(buf, at).map_err(|_| BlockError::Io)
    }

    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        let at = self.span(lba, data.len())?;
        self.file.write_all_at(data, at).map_err(|_| BlockError::Io)
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        self.file.sync_data().map_err(|_| BlockError::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreError};
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(std::format!("routerd-storage-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn create_save_reopen_load() {
        let d = dir("roundtrip");
        let path = d.join("state");
        let mut disk = FileDisk::create(&path, STATE_FILE_BYTES).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), STATE_FILE_BYTES);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(disk.block_count(), STATE_FILE_BYTES / 4096);
        assert!(FileDisk::create(&path, STATE_FILE_BYTES).is_err(), "never over an existing file");
        let region = disk.region();
        {
            let mut store = Store::format(&mut disk, region).unwrap();
            store.save(b"first").unwrap();
            store.save(b"the second record").unwrap();
        }
        drop(disk);

        let mut disk = FileDisk::open(&path).unwrap();
        let region = disk.region();
        let mut store = Store::open(&mut disk, region).unwrap();
        let mut buf = std::vec![0u8; crate::MAX_PAYLOAD];
        assert_eq!(store.load(&mut buf).unwrap(), Some(&b"the second record"[..]));
        assert_eq!(store.report().damaged_slots(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn sizes_are_checked() {
        let d = dir("sizes");
        let path = d.join("odd");
        let disk = FileDisk::create(&path, 5000).unwrap();
        assert_eq!(disk.block_count(), 2, "rounded up to whole blocks");
        drop(disk);
        let mut disk = FileDisk::open(&path).unwrap();
        let mut buf = [0u8; 4096];
        assert_eq!(disk.read(2, &mut buf), Err(BlockError::OutOfRange));
        assert_eq!(disk.read(u64::MAX, &mut buf), Err(BlockError::OutOfRange));
        assert_eq!(disk.read(0, &mut buf[..512]), Err(BlockError::BadLength));
        assert_eq!(disk.write(1, &[]), Err(BlockError::BadLength));
        disk.write(1, &[0xa5; 4096]).unwrap();
        disk.flush().unwrap();
        disk.read(1, &mut buf).unwrap();
        assert_eq!(buf, [0xa5; 4096]);
        // Two blocks are far too small for the store: refused by it, not a panic.
        let region = disk.region();
        assert_eq!(Store::open(&mut disk, region).err(), Some(StoreError::RegionTooSmall));

        // A short or torn file (not whole blocks, or empty) is refused at open.
        for len in [0u64, 100, 4096 * 3 + 1] {
            std::fs::write(&path, std::vec![0u8; len as usize]).unwrap();
            let e = FileDisk::open(&path).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{len}: {e}");
        }
        assert_eq!(FileDisk::open(&d.join("missing")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(FileDisk::open(&d).is_err(), "a directory is no disk");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn garbage_opens_as_a_damaged_store_never_a_panic() {
        let d = dir("garbage");
        let path = d.join("state");
        let mut bytes = std::vec![0u8; STATE_FILE_BYTES as usize];
        let mut x = 0x1234_5678u32;
        for b in &mut bytes {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut disk = FileDisk::open(&path).unwrap();
        let region = disk.region();
        let store = Store::open(&mut disk, region).unwrap();
        assert!(store.current().is_none());
        assert!(matches!(store.report().superblock, crate::SuperblockState::Corrupt(_)));
        let _ = std::fs::remove_dir_all(&d);
    }
}
