//! `routerctl image build`: a bootable disk image (raw, qcow2) or live ISO
//! from the firmware, without root and without loop mounts.
//!
//! The disk: a GPT with a BIOS boot partition (GRUB's core.img; boot.img in
//! the protective MBR, patched as grub-bios-setup would), an EFI system
//! partition (BOOTX64.EFI), ROUTERD-BOOT (GRUB's env block: which firmware
//! slot boots, a trial slot and its tries), two firmware slots ROUTERD-A/B
//! (the ELF as raw blocks, loaded by GRUB through a blocklist) and
//! ROUTERD-STATE (an empty store, or one holding `--config`).
//! docs/DISK-LAYOUT.md is the contract; [`layout`] the table, [`grub`] the
//! boot logic, [`fat`] the FAT volumes.
//!
//! Tools, and why: `grub-mkimage` (GRUB's images cannot be made otherwise),
//! `qemu-img` for qcow2 (the format Proxmox's `qm disk import` reads; its
//! output is deterministic), `xorriso` for the ISO (El Torito). Everything
//! else — the GPT, FAT, the memdisk tar, the store — is made here in memory,
//! so the same inputs give the same bytes: GUIDs and the FAT volume ids
//! come from a hash of the inputs, timestamps are fixed.
//!
//! `routerctl flash` is in [`flash`].

pub mod fat;
pub mod flash;
pub mod grub;
pub mod layout;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, Subcommand, ValueEnum};
use routerd_storage::{BlockDevice, BlockError, BlockSize, Region, Store};

use crate::{Failure, EXIT_FAILED, EXIT_USAGE};
use layout::{Role, SECTOR};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build a bootable disk image (raw, qcow2) or live ISO from the firmware
    #[command(
        long_about = "Build a bootable image of the box from the firmware (by default the one just built, \
            target/release/routerd next to this routerctl, or $ROUTERD_IMAGE). No root, no loop devices.\n\n\
            --format raw (USB sticks, SSDs) and qcow2 (Proxmox: qm disk import) are the same disk: GPT, \
            GRUB for legacy BIOS and UEFI, two firmware slots (A active, B the same firmware, for \
            upgrades), a boot-state partition GRUB reads and updates (trial boots and fallback), and the \
            ROUTERD-STATE partition with an empty store — or, with --config, the configuration you give \
            (validated as `config validate --for image`; keys are made on the box at its first boot). \
            --format iso is a live CD/USB: the firmware boots from it and keeps its state on any disk \
            with a ROUTERD-STATE partition (or `routerctl storage init`).\n\n\
            Reproducible: the same firmware, configuration and options give the same bytes. The size and \
            sha256 are printed. The console is COM1 at 115200 in GRUB and in the firmware. \
            docs/DISK-LAYOUT.md describes the layout.",
        after_long_help = "Examples:\n  \
            routerctl image build -o routerd.img                       # raw: dd it, or `routerctl flash`\n  \
            routerctl image build --format qcow2 --config onprem.toml -o onprem.qcow2   # for Proxmox\n  \
            routerctl image build --format iso -o routerd.iso\n  \
            routerctl image build --firmware ./routerd -o out.img --force   # replace out.img\n\n\
            Needs grub-mkimage with GRUB's i386-pc and x86_64-efi modules, qemu-img for qcow2, xorriso for iso:\n  \
            apt-get install -y --no-install-recommends grub-common grub-pc-bin grub-efi-amd64-bin qemu-utils xorriso\n\n\
            Exit codes: 0 built, 1 a tool failed or the configuration has errors, 2 bad usage (a missing \
            file, -o exists without --force, --config with iso)."
    )]
    Build(BuildArgs),
}

/// What to build.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A raw GPT disk (USB stick, SSD, `dd`)
    Raw,
    /// The same disk as qcow2 (Proxmox `qm disk import`)
    Qcow2,
    /// A live CD/USB (ISO 9660, El Torito BIOS and UEFI)
    Iso,
}

#[derive(Args)]
pub struct BuildArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    format: Format,
    /// The firmware ELF (default: $ROUTERD_IMAGE, else target/release/routerd next to this routerctl)
    #[arg(long, value_name = "PATH")]
    firmware: Option<PathBuf>,
    /// Seed the state partition with this configuration (TOML; raw and qcow2)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to write the image
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// Replace an existing output file
    #[arg(long)]
    force: bool,
    /// Extra words for the firmware's command line (e.g. routerd.test=shutdown)
    #[arg(long, value_name = "WORDS", default_value = "")]
    cmdline: String,
}

pub fn run(cmd: ImageCommand) -> Result<u8, Failure> {
    match cmd {
        ImageCommand::Build(args) => build(&args),
    }
}

fn usage(m: impl Into<String>) -> Failure {
    Failure { code: EXIT_USAGE, message: m.into() }
}

fn failed(m: impl Into<String>) -> Failure {
    Failure { code: EXIT_FAILED, message: m.into() }
}

fn build(args: &BuildArgs) -> Result<u8, Failure> {
    let started = std::time::Instant::now();
    if args.output.exists() && !args.force {
        return Err(usage(format!("{} exists; pass --force to replace it", args.output.display())));
    }
    if args.format == Format::Iso && args.config.is_some() {
        return Err(usage(
            "--config needs a disk image (--format raw or qcow2): a CD has no state partition; \
             boot the ISO and `routerctl apply` the file instead",
        ));
    }
    let firmware_path = find_firmware(args.firmware.as_deref())?;
    let firmware =
        std::fs::read(&firmware_path).map_err(|e| usage(format!("cannot read the firmware {}: {e}", firmware_path.display())))?;
    check_firmware(&firmware, &firmware_path)?;
    let config = match &args.config {
        Some(p) => Some(load_config(p)?),
        None => None,
    };

    // Everything the bytes depend on, for the GUIDs.
    let mut inputs = ring::digest::Context::new(&ring::digest::SHA256);
    inputs.update(&firmware);
    inputs.update(&[u8::from(config.is_some())]);
    if let Some((text, _)) = &config {
        inputs.update(text.as_bytes());
    }
    inputs.update(args.cmdline.as_bytes());
    let inputs = inputs.finish();

    let work = make_work_dir()?;
    let result = match args.format {
        Format::Raw | Format::Qcow2 => disk(&firmware, config.as_ref().map(|(_, c)| c), &args.cmdline, inputs.as_ref(), &work)
            .and_then(|raw| write_disk(&raw, args.format, &args.output, &work)),
        Format::Iso => iso(&firmware, &args.cmdline, &work, &args.output),
    };
    let _ = std::fs::remove_dir_all(&work);
    result?;

    let (size, sha) = sha256_file(&args.output).map_err(|e| failed(format!("cannot read back {}: {e}", args.output.display())))?;
    let what = match args.format {
        Format::Raw => "raw disk (GPT: BIOS + UEFI, slots A/B, state)",
        Format::Qcow2 => "qcow2 disk (GPT: BIOS + UEFI, slots A/B, state)",
        Format::Iso => "live ISO (BIOS + UEFI)",
    };
    println!(
        "{}: {what}, {} bytes ({:.1} MiB), built in {:.1} s",
        args.output.display(),
        size,
        size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    println!("firmware: {} ({} bytes)", firmware_path.display(), firmware.len());
    match &config {
        Some((_, c)) => println!(
            "state: seeded with {} (device {}); keys are made on the box at first boot",
            display(args.config.as_deref()),
            c.device.name
        ),
        None if args.format != Format::Iso => println!("state: empty store (provision with `routerctl apply`)"),
        None => {}
    }
    println!("sha256 {sha}  {}", args.output.display());
    Ok(0)
}

fn display(p: Option<&Path>) -> String {
    p.map(|p| p.display().to_string()).unwrap_or_default()
}

fn find_firmware(arg: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(p) = arg {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ROUTERD_IMAGE") {
        return Ok(PathBuf::from(p));
    }
    // target/{debug,release}/routerctl → target/release/routerd
    let exe = std::env::current_exe().map_err(|e| failed(format!("cannot locate routerctl: {e}")))?;
    if let Some(p) = exe.parent().and_then(Path::parent).map(|t| t.join("release").join("routerd")).filter(|p| p.is_file()) {
        return Ok(p);
    }
    Err(usage("no firmware: build it with `cargo xtask image` (or pass --firmware / set ROUTERD_IMAGE)"))
}

/// An ELF64 with a multiboot2 header in its first 32 KiB (what GRUB
/// needs), small enough for a slot.
fn check_firmware(fw: &[u8], path: &Path) -> Result<(), Failure> {
    if fw.get(..5) != Some(b"\x7fELF\x02") {
        return Err(usage(format!("{} is not an ELF64 file (the routerd firmware)", path.display())));
    }
    let head = fw.get(..fw.len().min(32 * 1024)).unwrap_or_default();
    let magic = 0xe852_50d6u32.to_le_bytes();
    if !head.chunks_exact(8).any(|c| c.get(..4) == Some(&magic[..])) {
        return Err(usage(format!("{} has no multiboot2 header: GRUB cannot boot it", path.display())));
    }
    let room = layout::SLOT_SECTORS * SECTOR;
    if fw.len() as u64 > room {
        return Err(usage(format!("{} is {} bytes; a firmware slot holds {room}", path.display(), fw.len())));
    }
    Ok(())
}

/// Reads, parses and validates `--config` as `config validate --for image`.
fn load_config(path: &Path) -> Result<(String, config_schema::Config), Failure> {
    let mut text = String::new();
    let limit = config_schema::human::MAX_TOML_LEN as u64 + 1;
    std::fs::File::open(path)
        .and_then(|f| f.take(limit).read_to_string(&mut text))
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    if text.len() > config_schema::human::MAX_TOML_LEN {
        return Err(usage(format!("{} is larger than {} bytes", path.display(), config_schema::human::MAX_TOML_LEN)));
    }
    let config = config_schema::human::from_toml(&text).map_err(|e| {
        let at = match (e.line, e.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}: ", path.display()),
            _ => format!("{}: ", path.display()),
        };
        usage(format!("{at}{}", e.report.trim_end()))
    })?;
    let report = config_schema::validate_for(&config, config_schema::Platform::Image);
    if !report.is_valid() {
        let mut m = format!(
            "{}: the configuration has {} for the image; nothing was built (see `routerctl config validate {}`):",
            path.display(),
            crate::plural(report.errors, "error"),
            path.display()
        );
        for p in report.problems.iter().filter(|p| p.severity == config_schema::Severity::Error) {
            m.push_str(&format!("\n  error[{}] {p}", p.code.as_str()));
        }
        return Err(failed(m));
    }
    Ok((text, config))
}

/// The whole raw disk, in memory.
fn disk(firmware: &[u8], config: Option<&config_schema::Config>, cmdline: &str, inputs: &[u8], work: &Path) -> Result<Vec<u8>, Failure> {
    let plan = layout::plan();
    let mut d = vec![0u8; plan.bytes() as usize];
    let guids: Vec<layout::Guid> = plan.partitions.iter().map(|p| layout::derive_guid(inputs, p.name)).collect();
    let table = layout::gpt(&plan, layout::derive_guid(inputs, "disk"), &guids);
    d[..table.primary.len()].copy_from_slice(&table.primary);
    let n = d.len();
    d[n - table.backup.len()..].copy_from_slice(&table.backup);

    let cfg = grub::disk_cfg(cmdline);
    // BIOS: core.img into the BIOS boot partition, boot.img into the MBR.
    let bios = plan.get(Role::BiosBoot);
    let mut core = grub::mkimage(grub::Platform::BiosDisk, &cfg, work).map_err(failed)?;
    layout::patch_core_img(&mut core, bios.first_lba, bios.sectors).map_err(|e| failed(e.to_string()))?;
    d[bios.byte_range().start..bios.byte_range().start + core.len()].copy_from_slice(&core);
    let boot_img = grub::bios_file("boot.img").map_err(failed)?;
    layout::install_boot_img(&mut d[..512], &boot_img, bios.first_lba).map_err(|e| failed(e.to_string()))?;

    // UEFI: the removable-media path every firmware looks at.
    let efi = grub::mkimage(grub::Platform::Efi, &cfg, work).map_err(failed)?;
    let fat_err = |what: &str, e: std::io::Error| failed(format!("cannot make the {what} FAT volume: {e}"));
    let esp = plan.get(Role::Esp).byte_range();
    fat::build(&mut d[esp], fatfs::FatType::Fat16, b"EFI-SYSTEM ", volume_id(inputs, "esp"), &[("EFI/BOOT/BOOTX64.EFI", &efi)])
        .map_err(|e| fat_err("EFI system", e))?;

    // Boot state: grubenv, at the offset the firmware rewrites.
    let boot = plan.get(Role::BootState).byte_range();
    let env = grub::initial_env();
    fat::build(&mut d[boot.clone()], fatfs::FatType::Fat12, b"ROUTERDBOOT", volume_id(inputs, "boot"), &[("grubenv", &env)])
        .map_err(|e| fat_err("boot-state", e))?;
    if fat::find_env_block(&d[boot]) != Some(fat::ENV_BLOCK_OFFSET) {
        return Err(failed("the env block is not where docs/DISK-LAYOUT.md says (a fatfs change?); refusing to build"));
    }

    // Both slots hold the firmware: A boots, B is the fallback until the
    // first upgrade writes it.
    for role in [Role::SlotA, Role::SlotB] {
        let at = plan.get(role).byte_range().start;
        d[at..at + firmware.len()].copy_from_slice(firmware);
    }

    let state = plan.get(Role::State).byte_range();
    seed_state(&mut d[state], config)?;
    Ok(d)
}

fn volume_id(inputs: &[u8], label: &str) -> u32 {
    let g = layout::derive_guid(inputs, label).0;
    u32::from_le_bytes([g[0], g[1], g[2], g[3]])
}

/// A slice of memory as a block device (the state partition, for the store).
struct MemBlocks<'a>(&'a mut [u8]);

impl BlockDevice for MemBlocks<'_> {
    fn block_size(&self) -> BlockSize {
        BlockSize::B512
    }
    fn block_count(&self) -> u64 {
        self.0.len() as u64 / SECTOR
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let at = usize::try_from(lba * SECTOR).map_err(|_| BlockError::OutOfRange)?;
        buf.copy_from_slice(self.0.get(at..at + buf.len()).ok_or(BlockError::OutOfRange)?);
        Ok(())
    }
    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        let at = usize::try_from(lba * SECTOR).map_err(|_| BlockError::OutOfRange)?;
        self.0.get_mut(at..at + data.len()).ok_or(BlockError::OutOfRange)?.copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        Ok(())
    }
}

/// The state partition: an empty store (a valid superblock, what
/// `storage init` leaves), or one record with the configuration and no keys
/// — the box's restore applies it and makes the keys it names.
fn seed_state(part: &mut [u8], config: Option<&config_schema::Config>) -> Result<(), Failure> {
    let blocks = part.len() as u64 / SECTOR;
    let region = Region { first_lba: 0, blocks };
    let mut store = Store::format(MemBlocks(part), region).map_err(|e| failed(format!("cannot format the state store: {e:?}")))?;
    if let Some(c) = config {
        let saved = routerd_control::Saved {
            version: routerd_control::persist::SAVED_VERSION,
            schema: config_schema::SCHEMA_HASH,
            // The seeded configuration is the box's first.
            generation: 1,
            boots: 0,
            wall_clock_ms: None,
            keys: Default::default(),
            config: Some(Box::new(c.clone())),
            // The box starts its history with the running configuration.
            history: Default::default(),
            pending: None,
        };
        let mut buf = vec![0u8; routerd_control::persist::SAVED_MAX];
        let bytes = saved.encode(&mut buf).ok_or_else(|| failed("the configuration does not fit the state record"))?;
        store.save(bytes).map_err(|e| failed(format!("cannot write the configuration into the store: {e:?}")))?;
    }
    Ok(())
}

fn write_disk(raw: &[u8], format: Format, output: &Path, work: &Path) -> Result<(), Failure> {
    let partial = partial_path(output);
    let io = |p: &Path, e: std::io::Error| failed(format!("cannot write {}: {e}", p.display()));
    match format {
        Format::Qcow2 => {
            let tmp = work.join("disk.raw");
            std::fs::write(&tmp, raw).map_err(|e| io(&tmp, e))?;
            let o = Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(&tmp)
                .arg(&partial)
                .output()
                .map_err(|e| failed(format!("cannot run qemu-img: {e} (apt-get install -y --no-install-recommends qemu-utils)")))?;
            if !o.status.success() {
                let _ = std::fs::remove_file(&partial);
                return Err(failed(format!("qemu-img convert failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).trim())));
            }
        }
        _ => std::fs::write(&partial, raw).map_err(|e| io(&partial, e))?,
    }
    std::fs::rename(&partial, output).map_err(|e| io(output, e))
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    output.with_file_name(name)
}

/// The live ISO: El Torito BIOS (GRUB's eltorito core) and UEFI (a FAT
/// image with BOOTX64.EFI), hybrid MBR/GPT so it also boots from a USB
/// stick, the firmware at /boot/routerd. Laid out like grub-mkrescue's,
/// with every date fixed so the bytes repeat.
fn iso(firmware: &[u8], cmdline: &str, work: &Path, output: &Path) -> Result<(), Failure> {
    let cfg = grub::iso_cfg(cmdline);
    let root = work.join("iso");
    let io = |e: std::io::Error| failed(format!("preparing the ISO tree in {}: {e}", root.display()));
    std::fs::create_dir_all(root.join("boot/grub")).map_err(io)?;
    std::fs::write(root.join("boot/routerd"), firmware).map_err(io)?;
    let eltorito = grub::mkimage(grub::Platform::BiosCd, &cfg, work).map_err(failed)?;
    std::fs::write(root.join("boot/grub/bios.img"), eltorito).map_err(io)?;
    let efi = grub::mkimage(grub::Platform::Efi, &cfg, work).map_err(failed)?;
    let mut efi_img = vec![0u8; (efi.len() + (256 << 10)).div_ceil(1 << 20) * (1 << 20)];
    fat::build(&mut efi_img, fatfs::FatType::Fat12, b"ROUTERD-EFI", 0x5254_4401, &[("EFI/BOOT/BOOTX64.EFI", &efi)])
        .map_err(|e| failed(format!("cannot make the ISO's EFI image: {e}")))?;
    std::fs::write(root.join("boot/grub/efi.img"), efi_img).map_err(io)?;
    for p in ["boot/routerd", "boot/grub/bios.img", "boot/grub/efi.img", "boot/grub", "boot", ""] {
        let f = std::fs::File::open(root.join(p)).map_err(io)?;
        f.set_modified(std::time::UNIX_EPOCH).map_err(io)?;
    }
    let hybrid = grub_lib_file("boot_hybrid.img")?;
    let partial = partial_path(output);
    let o = Command::new("xorriso")
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["-as", "mkisofs", "-graft-points", "--modification-date=1970010100000000", "-V", "ROUTERD"])
        .args(["-b", "boot/grub/bios.img", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", "--grub2-boot-info"])
        .arg("--grub2-mbr")
        .arg(&hybrid)
        .args(["--efi-boot", "boot/grub/efi.img", "-efi-boot-part", "--efi-boot-image", "--protective-msdos-label"])
        .arg("-o")
        .arg(&partial)
        .arg("-r")
        .arg(&root)
        .output()
        .map_err(|e| failed(format!("cannot run xorriso: {e} (apt-get install -y --no-install-recommends xorriso)")))?;
    if !o.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(failed(format!("xorriso failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).trim())));
    }
    std::fs::rename(&partial, output).map_err(|e| failed(format!("cannot write {}: {e}", output.display())))
}

fn grub_lib_file(name: &str) -> Result<PathBuf, Failure> {
    let p = grub::grub_lib().join("i386-pc").join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(failed(format!("{} is missing (apt-get install -y --no-install-recommends grub-pc-bin)", p.display())))
    }
}

fn make_work_dir() -> Result<PathBuf, Failure> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("routerctl-image-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| failed(format!("cannot make {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Size and sha256 (hex) of a file or device, read to its end or `limit`.
pub fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    sha256_reader(std::fs::File::open(path)?, u64::MAX, |_| {})
}

/// Hashes up to `limit` bytes of `r`, calling `progress` with the bytes so far.
pub fn sha256_reader(mut r: impl Read, limit: u64, mut progress: impl FnMut(u64)) -> std::io::Result<(u64, String)> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 4 << 20];
    let mut total = 0u64;
    while total < limit {
        let want = usize::try_from((limit - total).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        total += n as u64;
        progress(total);
    }
    Ok((total, hex(ctx.finish().as_ref())))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
