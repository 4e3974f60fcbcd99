//! `routerctl flash IMAGE --device PATH`: write an image to a USB stick or
//! disk (or a regular file), then read it back and compare sha256.
//!
//! Refusals come first and happen before the target is opened for writing
//! (`--dry-run` runs exactly these checks and stops): a qcow2 image (that
//! is for `qm disk import`), a partition instead of a whole disk, a device
//! that is mounted or used as swap (itself or any of its partitions, from
//! /proc/self/mountinfo and /proc/swaps), the disk holding `/`, a disk
//! smaller than the image, and — without `--force` — a disk the kernel says
//! is not removable (/sys/block/X/removable). The disk is then opened with
//! O_EXCL, which the kernel refuses for a block device in use: a second
//! guard against a check this code got wrong.
//!
//! Read-back: after fsync the page cache of the target is dropped
//! (POSIX_FADV_DONTNEED) so the comparison reads the medium, not memory.
//!
//! Exit codes: 0 written (and verified), 1 the write or the verification
//! failed, 2 refused or bad usage.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use crate::progress::Progress;
use crate::{Failure, EXIT_FAILED, EXIT_USAGE};

#[derive(Args)]
#[command(
    long_about = "Write a raw image (or ISO) made by `routerctl image build` to a USB stick, SSD or any block \
        device, or to a regular file, with progress (bytes, rate, ETA) on stderr. Then the target is read \
        back and its sha256 compared with the image's (skip with --no-verify).\n\n\
        Refused: a qcow2 image, a partition (name the whole disk), a mounted device or one with a mounted \
        partition or swap, the disk the running system lives on, a disk smaller than the image, and a \
        non-removable disk unless --force. A block device needs --yes or a typed confirmation. --dry-run \
        runs the same checks and says what would be written.",
    after_long_help = "Examples:\n  \
        routerctl flash routerd.img --device /dev/sdb\n  \
        routerctl flash routerd.img --device /dev/sdb --dry-run\n  \
        routerctl flash routerd.img --device /dev/nvme1n1 --force --yes   # a fixed disk\n  \
        routerctl flash routerd.img --device ./copy.img                   # a file\n\n\
        Exit codes: 0 written and verified, 1 the write or the verification failed, 2 refused or bad usage."
)]
pub struct FlashArgs {
    /// The image file (raw or iso)
    image: PathBuf,
    /// The target: a whole disk (/dev/sdX, /dev/nvme0n1, /dev/mmcblk0) or a file
    #[arg(long, value_name = "PATH")]
    device: PathBuf,
    /// Allow a disk the kernel does not call removable
    #[arg(long)]
    force: bool,
    /// Only check and say what would be written
    #[arg(long)]
    dry_run: bool,
    /// Do not read the target back
    #[arg(long)]
    no_verify: bool,
    /// Do not ask before writing a block device
    #[arg(long, short)]
    yes: bool,
}

/// A test hook: after the write and before the read-back, flip the byte at
/// this offset of the target, so tests can see a verification fail.
const CORRUPT_ENV: &str = "ROUTERCTL_TEST_CORRUPT_AFTER_WRITE";

fn refused(m: impl Into<String>) -> Failure {
    Failure { code: EXIT_USAGE, message: m.into() }
}

fn failed(m: impl Into<String>) -> Failure {
    Failure { code: EXIT_FAILED, message: m.into() }
}

/// What the target is.
#[derive(Debug)]
enum Target {
    /// A regular file (made if missing).
    File,
    /// A whole disk: its kernel name, size in bytes, removable flag, model.
    Disk { name: String, bytes: u64, removable: bool, model: String },
}

pub fn run(args: &FlashArgs) -> Result<u8, Failure> {
    let image_len = std::fs::metadata(&args.image).map_err(|e| refused(format!("cannot read {}: {e}", args.image.display())))?.len();
    let mut head = [0u8; 4];
    File::open(&args.image).and_then(|mut f| f.read_exact(&mut head)).map_err(|e| refused(format!("{}: {e}", args.image.display())))?;
    if head == *b"QFI\xfb" {
        return Err(refused(format!(
            "{} is qcow2: that is for Proxmox (`qm disk import`); flash a raw image (`routerctl image build --format raw`)",
            args.image.display()
        )));
    }
    let same = std::fs::canonicalize(&args.image).ok().zip(std::fs::canonicalize(&args.device).ok()).is_some_and(|(a, b)| a == b);
    if same {
        return Err(refused(format!("{} is the image itself", args.device.display())));
    }
    let target = check_target(&args.device, image_len, args.force)?;
    let what = match &target {
        Target::File => format!("the file {}", args.device.display()),
        Target::Disk { name, bytes, removable, model } => format!(
            "{} ({name}, {model}, {:.1} GB, {})",
            args.device.display(),
            *bytes as f64 / 1e9,
            if *removable { "removable" } else { "fixed" }
        ),
    };
    let mib = image_len as f64 / 1048576.0;
    if args.dry_run {
        println!(
            "would write {} ({image_len} bytes, {mib:.1} MiB) to {what}{}",
            args.image.display(),
            if args.no_verify { "" } else { ", then read it back and compare sha256" }
        );
        return Ok(0);
    }
    if matches!(target, Target::Disk { .. }) && !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(refused(format!("writing {what} erases it: pass --yes (no terminal to ask on)")));
        }
        eprint!("Write {} to {what}? Everything on it is lost. Type yes: ", args.image.display());
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if answer.trim() != "yes" {
            return Err(refused("not written"));
        }
    }

    let started = Instant::now();
    let (written, image_sha) = write(&args.image, &args.device, &target, image_len)?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    eprintln!("wrote {written} bytes ({mib:.1} MiB) to {} in {secs:.1} s ({:.1} MiB/s)", args.device.display(), mib / secs);
    if let Some(at) = std::env::var_os(CORRUPT_ENV).and_then(|v| v.to_str()?.parse::<u64>().ok()) {
        corrupt(&args.device, at).map_err(|e| failed(format!("test hook: {e}")))?;
    }
    if args.no_verify {
        println!("{}: written, not verified (--no-verify); image sha256 {image_sha}", args.device.display());
        return Ok(0);
    }
    let started = Instant::now();
    let target_sha = read_back(&args.device, image_len)?;
    if target_sha != image_sha {
        eprintln!("routerctl: verification FAILED: {} reads back sha256 {target_sha}, the image is {image_sha}", args.device.display());
        println!("{}: verification failed", args.device.display());
        return Ok(EXIT_FAILED);
    }
    eprintln!("read back {image_len} bytes in {:.1} s", started.elapsed().as_secs_f64());
    println!("{}: written and verified, sha256 {image_sha}", args.device.display());
    Ok(0)
}

/// Every refusal, before anything is opened for writing.
fn check_target(device: &Path, image_len: u64, force: bool) -> Result<Target, Failure> {
    let meta = match std::fs::metadata(device) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::File),
        Err(e) => return Err(refused(format!("{}: {e}", device.display()))),
    };
    if meta.is_file() {
        return Ok(Target::File);
    }
    if !meta.file_type().is_block_device() {
        return Err(refused(format!("{} is neither a block device nor a regular file", device.display())));
    }
    let rdev = meta.rdev();
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))
        .map_err(|e| refused(format!("{}: no sysfs entry for block device {major}:{minor}: {e}", device.display())))?;
    if sys.join("partition").exists() {
        let disk = sys.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        return Err(refused(format!("{} is a partition; name the whole disk (/dev/{disk})", device.display())));
    }
    let name = sys.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // The disk and its partitions, as major:minor.
    let mut devs = vec![format!("{major}:{minor}")];
    let mut part_names = vec![name.clone()];
    if let Ok(entries) = std::fs::read_dir(&sys) {
        for e in entries.flatten() {
            if e.path().join("partition").exists() {
                if let Ok(d) = std::fs::read_to_string(e.path().join("dev")) {
                    devs.push(d.trim().to_string());
                }
                part_names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| refused(format!("cannot read /proc/self/mountinfo: {e}")))?;
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if let (Some(dev), Some(mount)) = (f.get(2), f.get(4)) {
            if devs.iter().any(|d| d == dev) {
                return Err(refused(format!("{} is in use: mounted at {mount} ({dev}); unmount it first", device.display())));
            }
        }
    }
    if let Ok(swaps) = std::fs::read_to_string("/proc/swaps") {
        for line in swaps.lines().skip(1) {
            let src = line.split_whitespace().next().unwrap_or_default();
            if part_names.iter().any(|p| src == format!("/dev/{p}")) {
                return Err(refused(format!("{} is in use as swap ({src}); swapoff first", device.display())));
            }
        }
    }
    if let Ok(root) = std::fs::metadata("/") {
        let (rmaj, rmin) = (rustix::fs::major(root.dev()), rustix::fs::minor(root.dev()));
        let root_sys = std::fs::canonicalize(format!("/sys/dev/block/{rmaj}:{rmin}")).ok();
        let root_disk = root_sys.map(|p| if p.join("partition").exists() { p.parent().map(Path::to_path_buf).unwrap_or(p) } else { p });
        if root_disk.as_deref() == Some(sys.as_path()) {
            return Err(refused(format!("{} holds the running system (/); refusing", device.display())));
        }
    }
    let read = |f: &str| std::fs::read_to_string(sys.join(f)).map(|s| s.trim().to_string()).unwrap_or_default();
    let bytes = read("size").parse::<u64>().unwrap_or(0).saturating_mul(512);
    let removable = read("removable") == "1";
    let model = Some(read("device/model")).filter(|m| !m.is_empty()).unwrap_or_else(|| "unknown model".into());
    if bytes < image_len {
        return Err(refused(format!("{} has {bytes} bytes; the image needs {image_len}", device.display())));
    }
    if !removable && !force {
        return Err(refused(format!(
            "{} ({name}, {model}) is not a removable disk; if it really is the one, pass --force",
            device.display()
        )));
    }
    Ok(Target::Disk { name, bytes, removable, model })
}

/// Copies the image, hashing as it goes; progress on a terminal's stderr.
fn write(image: &Path, device: &Path, target: &Target, len: u64) -> Result<(u64, String), Failure> {
    let mut src = File::open(image).map_err(|e| failed(format!("{}: {e}", image.display())))?;
    let mut opts = OpenOptions::new();
    opts.write(true);
    match target {
        Target::File => {
            opts.create(true).truncate(true);
        }
        // O_EXCL on a block device: the kernel refuses one that is mounted
        // or otherwise claimed.
        Target::Disk { .. } => {
            opts.custom_flags(rustix::fs::OFlags::EXCL.bits() as i32);
        }
    }
    let mut dst = opts.open(device).map_err(|e| failed(format!("cannot open {} for writing: {e}", device.display())))?;
    let mut progress = Progress::new("writing", len);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(|e| failed(format!("{}: {e}", image.display())))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(|e| failed(format!("write to {} failed after {done} bytes: {e}", device.display())))?;
        done += n as u64;
        progress.show(done);
    }
    dst.sync_all().map_err(|e| failed(format!("flushing {} failed: {e}", device.display())))?;
    progress.done();
    Ok((done, super::hex(ctx.finish().as_ref())))
}

fn read_back(device: &Path, len: u64) -> Result<String, Failure> {
    let f = File::open(device).map_err(|e| failed(format!("cannot open {} to verify: {e}", device.display())))?;
    // Read the medium, not what the page cache still holds from the write.
    let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
    let mut progress = Progress::new("verifying", len);
    let (n, sha) =
        super::sha256_reader(f, len, |d| progress.show(d)).map_err(|e| failed(format!("reading back {}: {e}", device.display())))?;
    progress.done();
    if n != len {
        return Err(failed(format!("{} reads back only {n} of {len} bytes", device.display())));
    }
    Ok(sha)
}

fn corrupt(device: &Path, at: u64) -> std::io::Result<()> {
    let mut f = OpenOptions::new().read(true).write(true).open(device)?;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut b)?;
    f.seek(SeekFrom::Start(at))?;
    f.write_all(&[b[0] ^ 0xff])?;
    f.sync_all()
}
