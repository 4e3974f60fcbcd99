//! GRUB for the image: its configuration (the A/B slot logic), the memdisk
//! that carries it, and the `grub-mkimage` runs for BIOS, UEFI and CD.
//!
//! The configuration never lives on a filesystem GRUB has to find: it is
//! `/boot/grub/grub.cfg` inside a memdisk (a tar built here, byte for byte
//! the same each time) embedded in core.img / BOOTX64.EFI, and GRUB's
//! prefix points at it. The only mutable thing is the environment block
//! (`grubenv`) on the ROUTERD-BOOT partition; see docs/DISK-LAYOUT.md for
//! the variables and the boot flow, which [`disk_cfg`] implements.
//!
//! Why the env block sits in a FAT file and not on raw sectors: GRUB 2.06's
//! `save_env` refuses a blocklist file (`(hd0,gpt3)0+2`) with "sparse file
//! not allowed" — the blocklist reader does not report the sectors it read,
//! so save_env cannot tell where to write (measured in QEMU, BIOS and UEFI).
//! Through FAT it works; the file's sectors never move, so the firmware can
//! still rewrite them raw.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::layout::SLOT_SECTORS;

/// Most trial boots a slot can be given (grub.cfg counts down without
/// arithmetic, one `elif` per value).
pub const MAX_TRIES: u32 = 9;

/// Where GRUB's platform directories are (`ROUTERD_GRUB_DIR` overrides).
pub fn grub_lib() -> PathBuf {
    std::env::var_os("ROUTERD_GRUB_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/lib/grub"))
}

/// The env block's size: GRUB's fixed 1 KiB.
pub const ENV_BLOCK_BYTES: usize = 1024;
const ENV_SIGNATURE: &str = "# GRUB Environment Block\n";

/// A GRUB environment block holding `vars` (`name=value` lines, `#`
/// padding), as `grub-editenv` writes it.
pub fn env_block(vars: &[(&str, &str)]) -> Vec<u8> {
    let mut b = ENV_SIGNATURE.as_bytes().to_vec();
    for (k, v) in vars {
        b.extend_from_slice(format!("{k}={v}\n").as_bytes());
    }
    b.resize(ENV_BLOCK_BYTES, b'#');
    b
}

/// The block every image starts with: slot A is the one to boot, no trial.
pub fn initial_env() -> Vec<u8> {
    env_block(&[("routerd_slot", "A"), ("routerd_trial", ""), ("routerd_tries", "0")])
}

const SERIAL: &str = "serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n\
                      terminal_input serial\n\
                      terminal_output serial\n";

/// The kernel command line every boot gets (before the slot's own words).
pub fn base_cmdline(extra: &str) -> String {
    let mut c = "console=ttyS0,115200".to_string();
    if !extra.trim().is_empty() {
        c.push(' ');
        c.push_str(extra.trim());
    }
    c
}

/// grub.cfg for a disk image: pick the slot from the env block, count a
/// trial boot down, fall back to the other slot if one does not load.
pub fn disk_cfg(extra_cmdline: &str) -> String {
    let cmdline = base_cmdline(extra_cmdline);
    let mut countdown = String::new();
    for n in (1..=MAX_TRIES).rev() {
        let kw = if n == MAX_TRIES { "if" } else { "elif" };
        countdown.push_str(&format!("  {kw} [ \"$routerd_tries\" = {n} ]; then set routerd_tries={}; set rd_boot=$routerd_trial\n", n - 1));
    }
    format!(
        "# routerd boot selection; the variables are explained in docs/DISK-LAYOUT.md.\n\
{SERIAL}\
set timeout=0\n\
set gfxpayload=keep\n\
# The disk GRUB was started from: (hd0) on BIOS, (hd0,gpt2)/EFI/BOOT on UEFI.\n\
regexp --set=1:rd_disk '^\\(([^,)]+)' \"$cmdpath\"\n\
set rd_env=\"($rd_disk,gpt3)/grubenv\"\n\
set routerd_slot=A\n\
set routerd_trial=\n\
set routerd_tries=0\n\
load_env --file $rd_env routerd_slot routerd_trial routerd_tries\n\
if [ \"$routerd_slot\" != B ]; then set routerd_slot=A; fi\n\
set rd_boot=$routerd_slot\n\
set rd_is_trial=0\n\
if [ \"$routerd_trial\" = A ]; then set rd_is_trial=1; fi\n\
if [ \"$routerd_trial\" = B ]; then set rd_is_trial=1; fi\n\
if [ \"$rd_is_trial\" = 1 ]; then\n\
{countdown}\
  else\n\
    # Tries used up without the firmware confirming: back to the good slot.\n\
    set routerd_failed=$routerd_trial\n\
    set routerd_trial=\n\
    set routerd_tries=0\n\
  fi\n\
  save_env --file $rd_env routerd_trial routerd_tries routerd_failed\n\
fi\n\
function rd_load {{\n\
  echo \"routerd: slot $1 from ($rd_disk,gpt$2)\"\n\
  set rd_words=\"routerd.slot=$1\"\n\
  if [ \"$1\" = \"$routerd_trial\" ]; then set rd_words=\"routerd.slot=$1 routerd.trial=$routerd_tries\"; fi\n\
  if multiboot2 ($rd_disk,gpt$2)0+{SLOT_SECTORS} {cmdline} $rd_words; then boot; fi\n\
  echo \"routerd: slot $1 does not load\"\n\
}}\n\
if [ \"$rd_boot\" = B ]; then rd_load B 5; rd_load A 4; else rd_load A 4; rd_load B 5; fi\n\
echo \"routerd: no firmware slot loads; rebooting in 10 s\"\n\
sleep 10\n\
reboot\n"
    )
}

/// grub.cfg for the live CD: the firmware is `/boot/routerd` on the ISO.
pub fn iso_cfg(extra_cmdline: &str) -> String {
    let cmdline = base_cmdline(extra_cmdline);
    format!(
        "# routerd live CD\n\
{SERIAL}\
set timeout=0\n\
set gfxpayload=keep\n\
search --no-floppy --set=root --file /boot/routerd\n\
echo \"routerd: live from $root\"\n\
multiboot2 /boot/routerd {cmdline} routerd.slot=live\n\
boot\n"
    )
}

/// A ustar archive of `files` (path, contents) with every directory above
/// them, mode 0644/0755, owner 0, mtime 0, in the given order: GRUB's
/// memdisk, identical bytes for identical files.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    for (path, _) in files {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let d = format!("{}/", &path[..at + i]);
            if !dirs.contains(&d) {
                dirs.push(d);
            }
            at += i + 1;
        }
    }
    for d in &dirs {
        tar_header(&mut out, d, 0, b'5', 0o755);
    }
    for (path, data) in files {
        tar_header(&mut out, path, data.len() as u64, b'0', 0o644);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    // End of archive: two zero blocks.
    out.resize(out.len() + 1024, 0);
    out
}

fn tar_header(out: &mut Vec<u8>, name: &str, size: u64, kind: u8, mode: u32) {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name.as_bytes()[..n]);
    let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = width - 1);
        h[at..at + width].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, u64::from(mode));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, 0);
    h[148..156].fill(b' ');
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    out.extend_from_slice(&h);
}

/// The GRUB platforms the image uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// BIOS from a disk: core.img in the BIOS boot partition.
    BiosDisk,
    /// BIOS from a CD (El Torito, no emulation).
    BiosCd,
    /// UEFI: BOOTX64.EFI.
    Efi,
}

impl Platform {
    fn format(self) -> &'static str {
        match self {
            Platform::BiosDisk => "i386-pc",
            Platform::BiosCd => "i386-pc-eltorito",
            Platform::Efi => "x86_64-efi",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Platform::BiosDisk | Platform::BiosCd => "i386-pc",
            Platform::Efi => "x86_64-efi",
        }
    }

    /// The modules built in: only what the configurations use (no module
    /// is ever loaded from a disk). `grub-mkimage` adds their dependencies.
    fn modules(self) -> Vec<&'static str> {
        const COMMON: [&str; 14] = [
            "part_gpt",
            "fat",
            "memdisk",
            "tar",
            "normal",
            "echo",
            "test",
            "regexp",
            "loadenv",
            "multiboot2",
            "serial",
            "terminal",
            "boot",
            "sleep",
        ];
        match self {
            Platform::BiosDisk => &["biosdisk", "reboot"][..],
            Platform::BiosCd => &["biosdisk", "iso9660", "search_fs_file", "search", "reboot"],
            Platform::Efi => &["iso9660", "search_fs_file", "search", "reboot"],
        }
        .iter()
        .chain(COMMON.iter())
        .copied()
        .collect()
    }
}

/// Runs `grub-mkimage` for `platform` with `cfg` in its memdisk; returns
/// the image (core.img, the El Torito image, or BOOTX64.EFI).
pub fn mkimage(platform: Platform, cfg: &str, work: &Path) -> Result<Vec<u8>, String> {
    let dir = grub_lib().join(platform.dir());
    if !dir.join("multiboot2.mod").is_file() {
        let pkg = if platform == Platform::Efi { "grub-efi-amd64-bin" } else { "grub-pc-bin" };
        return Err(format!(
            "GRUB's {} modules are not in {} (apt-get install -y --no-install-recommends {pkg} grub-common)",
            platform.dir(),
            dir.display()
        ));
    }
    let tag = platform.format();
    let memdisk = work.join(format!("memdisk-{tag}.tar"));
    let out = work.join(format!("grub-{tag}.img"));
    std::fs::write(&memdisk, tar(&[("boot/grub/grub.cfg", cfg.as_bytes())])).map_err(|e| format!("{}: {e}", memdisk.display()))?;
    let mut c = Command::new("grub-mkimage");
    c.arg("--directory").arg(&dir).args(["--format", tag, "--prefix", "(memdisk)/boot/grub", "--compression", "auto"]);
    c.arg("--memdisk").arg(&memdisk).arg("--output").arg(&out).args(platform.modules());
    let o = c.output().map_err(|e| {
        format!("cannot run grub-mkimage: {e} (apt-get install -y --no-install-recommends grub-common grub-pc-bin grub-efi-amd64-bin)")
    })?;
    if !o.status.success() {
        return Err(format!("grub-mkimage -O {tag} failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).trim()));
    }
    std::fs::read(&out).map_err(|e| format!("{}: {e}", out.display()))
}

/// GRUB's i386-pc boot.img (the MBR code) and boot_hybrid.img (the ISO's).
pub fn bios_file(name: &str) -> Result<Vec<u8>, String> {
    let p = grub_lib().join("i386-pc").join(name);
    std::fs::read(&p).map_err(|e| format!("{}: {e} (apt-get install -y --no-install-recommends grub-pc-bin)", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_block_is_grubs_format() {
        let b = initial_env();
        assert_eq!(b.len(), 1024);
        let text = String::from_utf8(b).unwrap();
        assert!(text.starts_with("# GRUB Environment Block\nrouterd_slot=A\nrouterd_trial=\nrouterd_tries=0\n#"));
        assert!(text.trim_end_matches('#').ends_with("routerd_tries=0\n"));
    }

    #[test]
    fn disk_cfg_counts_every_try_down_and_falls_back() {
        let c = disk_cfg("routerd.test=x");
        for n in 1..=MAX_TRIES {
            assert!(c.contains(&format!("[ \"$routerd_tries\" = {n} ]; then set routerd_tries={};", n - 1)), "{c}");
        }
        assert!(c.contains("save_env --file $rd_env routerd_trial routerd_tries routerd_failed"));
        assert!(c.contains(&format!("multiboot2 ($rd_disk,gpt$2)0+{SLOT_SECTORS} console=ttyS0,115200 routerd.test=x $rd_words")));
        assert!(c.contains("rd_load B 5; rd_load A 4; else rd_load A 4; rd_load B 5;"));
        // GRUB's parser needs balanced braces (the QEMU tests run it).
        assert_eq!(c.matches('{').count(), c.matches('}').count());
    }

    #[test]
    fn tar_is_ustar_and_stable() {
        let t = tar(&[("boot/grub/grub.cfg", b"hello")]);
        assert_eq!(t.len(), 512 * 3 + 512 + 1024);
        assert_eq!(&t[0..6], b"boot/\0");
        assert_eq!(&t[512..524], b"boot/grub/\0\0");
        assert_eq!(&t[1024..1042], b"boot/grub/grub.cfg");
        assert_eq!(&t[1024 + 257..1024 + 263], b"ustar\0");
        assert_eq!(&t[1024 + 124..1024 + 136], b"00000000005\0");
        assert_eq!(&t[1536..1541], b"hello");
        // The checksum field is the sum of the header with it as spaces.
        let h = &t[1024..1536];
        let sum: u64 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum();
        assert_eq!(std::str::from_utf8(&h[148..154]).unwrap(), format!("{sum:06o}"));
        assert_eq!(t, tar(&[("boot/grub/grub.cfg", b"hello")]));
    }
}
