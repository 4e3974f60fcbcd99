//! The one place that knows how to start the routerd image under QEMU.
//!
//! Tests, the lab and `routerctl` describe a machine ([`Machine`]) — machine
//! type, NICs with their model, MAC and backend, kernel command line — and get
//! a running [`Vm`] with its serial console on a unix socket. Nothing else in
//! the workspace builds QEMU command lines.
//!
//! Choices made here, once:
//! - TCG only (`-accel tcg`): KVM is not dependable on the machines we test
//!   on, and the image must not depend on it.
//! - `-nodefaults -no-reboot -display none`: only the devices we ask for, and a
//!   triple fault ends QEMU (status 0, which no test accepts as success)
//!   instead of rebooting forever (a test that reboots the box on purpose
//!   sets `Machine::reboot`).
//! - `isa-debug-exit` at 0xf4: the image ends the run with a status the
//!   harness can tell apart (33 clean shutdown, 35 panic).
//! - The serial console is a unix socket server that waits for the harness to
//!   connect before the guest starts, so no early output is lost.
//! - NIC backends: unix `dgram` and `stream` sockets (a harness exchanges raw
//!   Ethernet frames without root) and TAP (namespace tests, needs root).

use std::fmt;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Status QEMU exits with when the image shuts down cleanly (debug-exit 0x10).
pub const EXIT_CLEAN: i32 = 33;
/// Status QEMU exits with when the image panics (debug-exit 0x11).
pub const EXIT_PANIC: i32 = 35;

/// The QEMU binary used, unless `ROUTERD_QEMU` names another.
pub fn qemu_binary() -> PathBuf {
    std::env::var_os("ROUTERD_QEMU").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"))
}

/// The emulated chipset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineType {
    /// i440FX + PIIX, conventional PCI.
    Pc,
    /// Q35 + ICH9, PCI Express.
    Q35,
}

impl MachineType {
    fn arg(self) -> &'static str {
        match self {
            MachineType::Pc => "pc",
            MachineType::Q35 => "q35",
        }
    }
}

/// NIC device models the image supports (or will).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicModel {
    VirtioNet,
    E1000e,
}

impl NicModel {
    fn device(self) -> &'static str {
        match self {
            NicModel::VirtioNet => "virtio-net-pci",
            NicModel::E1000e => "e1000e",
        }
    }
}

/// Where a NIC's frames go.
#[derive(Clone, Debug)]
pub enum NetBackend {
    /// Unix datagram sockets, one frame per datagram. QEMU binds `guest`
    /// and sends to `harness`; the harness binds `harness` and sends to `guest`.
    Dgram { guest: PathBuf, harness: PathBuf },
    /// A unix stream socket QEMU connects to (4-byte big-endian length
    /// before each frame). The harness must be listening before spawn.
    Stream { path: PathBuf },
    /// A Linux TAP device (needs root or a pre-made persistent TAP).
    Tap { ifname: String },
}

/// One NIC: model, MAC and backend.
#[derive(Clone, Debug)]
pub struct Nic {
    pub model: NicModel,
    pub mac: [u8; 6],
    pub backend: NetBackend,
}

/// Formats a MAC the way QEMU and the console print it.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A machine to start.
#[derive(Clone, Debug)]
pub struct Machine {
    pub image: PathBuf,
    pub machine: MachineType,
    pub memory_mib: u32,
    pub nics: Vec<Nic>,
    /// Kernel command line (`-append`).
    pub cmdline: String,
    /// Directory for the serial socket (and anything else per run).
    pub run_dir: PathBuf,
    /// How the image is loaded.
    pub boot: Boot,
    /// QEMU CPU model; `max` (everything TCG emulates: AVX2, RDRAND, RDSEED)
    /// unless a test wants an older CPU.
    pub cpu: String,
    /// Further devices, as `-device` arguments (e.g. `virtio-rng-pci`).
    pub devices: Vec<String>,
    /// Raw disk image files, attached on [`disk_bus`](Self::disk_bus) with a
    /// volatile write cache (`cache=writeback`): what the guest has not
    /// flushed may be lost when QEMU is killed, as on real hardware.
    pub disks: Vec<PathBuf>,
    /// The controller the disks hang off (virtio-blk unless a test says).
    pub disk_bus: DiskBus,
    /// Attach `isa-debug-exit` (the image's test verdict channel). Without
    /// it the image powers off through ACPI like on hardware.
    pub debug_exit: bool,
    /// The guest's RTC at start (`-rtc base=2031-05-06T07:08:09`, UTC);
    /// QEMU's default (the host's clock) when `None`.
    pub rtc_base: Option<String>,
    /// A guest reset reboots the machine (same image, disks and serial
    /// socket) instead of ending QEMU (`-no-reboot`, the default).
    pub reboot: bool,
}

/// Disk controllers the image drives, and the names Linux (and the image)
/// gives their disks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskBus {
    /// virtio-blk-pci: `vda`, `vdb`, …
    Virtio,
    /// An AHCI (SATA) controller with one disk per port: `sda`, `sdb`, …
    Ahci,
    /// One NVMe controller per disk, one namespace each: `nvme0n1`, `nvme1n1`, …
    Nvme,
}

impl DiskBus {
    /// The name the `index`-th disk on this bus gets.
    pub fn disk_name(self, index: usize) -> String {
        let letter = char::from(b'a' + u8::try_from(index.min(25)).unwrap_or(25));
        match self {
            DiskBus::Virtio => format!("vd{letter}"),
            DiskBus::Ahci => format!("sd{letter}"),
            DiskBus::Nvme => format!("nvme{index}n1"),
        }
    }
}

/// How QEMU loads the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// `-kernel` through the PVH entry note (the fast path for tests).
    Pvh,
    /// BIOS → GRUB from a CD image made by [`grub_iso`] → multiboot2 (the
    /// path a USB stick or disk takes). The command line is in the ISO.
    GrubIso(PathBuf),
    /// The machine's firmware boots the first of [`Machine::disks`] (a disk
    /// image from `routerctl image build`, whose GRUB loads the image and
    /// holds the command line; `image` and `cmdline` are not used).
    Disk(Firmware),
}

/// The machine's own firmware, for [`Boot::Disk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default (legacy BIOS).
    Bios,
    /// UEFI: OVMF's code (read-only) and a writable copy of its variable
    /// store, as two pflash drives (Debian's `ovmf`:
    /// /usr/share/OVMF/OVMF_CODE.fd and a copy of OVMF_VARS.fd).
    Uefi { code: PathBuf, vars: PathBuf },
}

impl Machine {
    /// A pc machine with 128 MiB, no NICs, and a fresh run directory under
    /// the system temp dir.
    pub fn new(image: impl Into<PathBuf>) -> io::Result<Machine> {
        Ok(Machine {
            image: image.into(),
            machine: MachineType::Pc,
            memory_mib: 128,
            nics: Vec::new(),
            cmdline: String::new(),
            run_dir: make_run_dir()?,
            boot: Boot::Pvh,
            cpu: "max".to_string(),
            devices: Vec::new(),
            disks: Vec::new(),
            disk_bus: DiskBus::Virtio,
            debug_exit: true,
            rtc_base: None,
            reboot: false,
        })
    }

    /// Where the serial console socket lives.
    pub fn serial_path(&self) -> PathBuf {
        self.run_dir.join("serial.sock")
    }

    /// The QEMU invocation for this machine.
    pub fn command(&self) -> Command {
        let mut c = Command::new(qemu_binary());
        c.args(["-machine", self.machine.arg(), "-accel", "tcg", "-cpu", &self.cpu]);
        c.args(["-m", &format!("{}M", self.memory_mib)]);
        c.args(["-nodefaults", "-display", "none"]);
        if !self.reboot {
            c.arg("-no-reboot");
        }
        if self.debug_exit {
            c.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]);
        }
        if let Some(base) = &self.rtc_base {
            c.args(["-rtc", &format!("base={base}")]);
        }
        c.arg("-chardev").arg(format!("socket,id=console,path={},server=on,wait=on", self.serial_path().display()));
        c.args(["-serial", "chardev:console"]);
        match &self.boot {
            Boot::Pvh => {
                c.arg("-kernel").arg(&self.image);
                if !self.cmdline.is_empty() {
                    c.args(["-append", &self.cmdline]);
                }
            }
            Boot::GrubIso(iso) => {
                c.arg("-cdrom").arg(iso);
            }
            Boot::Disk(Firmware::Bios) => {}
            Boot::Disk(Firmware::Uefi { code, vars }) => {
                c.arg("-drive").arg(format!("if=pflash,format=raw,readonly=on,file={}", code.display()));
                c.arg("-drive").arg(format!("if=pflash,format=raw,file={}", vars.display()));
            }
        }
        for d in &self.devices {
            c.args(["-device", d]);
        }
        if self.disk_bus == DiskBus::Ahci && !self.disks.is_empty() {
            c.args(["-device", "ahci,id=ahci0"]);
        }
        for (i, disk) in self.disks.iter().enumerate() {
            // qcow2 by its extension (Proxmox's format); raw otherwise.
            let format = if disk.extension().is_some_and(|e| e == "qcow2") { "qcow2" } else { "raw" };
            c.arg("-drive").arg(format!("file={},if=none,id=disk{i},format={format},cache=writeback", disk.display()));
            let device = match self.disk_bus {
                DiskBus::Virtio => format!("virtio-blk-pci,drive=disk{i},serial=routerd-disk{i}"),
                DiskBus::Ahci => format!("ide-hd,drive=disk{i},bus=ahci0.{i},serial=routerd-disk{i}"),
                DiskBus::Nvme => format!("nvme,drive=disk{i},serial=routerd-disk{i}"),
            };
            c.arg("-device").arg(device);
        }
        for (i, nic) in self.nics.iter().enumerate() {
            let id = format!("net{i}");
            let netdev = match &nic.backend {
                NetBackend::Dgram { guest, harness } => format!(
                    "dgram,id={id},local.type=unix,local.path={},remote.type=unix,remote.path={}",
                    guest.display(),
                    harness.display()
                ),
                NetBackend::Stream { path } => format!("stream,id={id},server=off,addr.type=unix,addr.path={}", path.display()),
                NetBackend::Tap { ifname } => {
                    format!("tap,id={id},ifname={ifname},script=no,downscript=no")
                }
            };
            c.args(["-netdev", &netdev]);
            c.arg("-device").arg(format!("{},netdev={id},mac={}", nic.model.device(), format_mac(nic.mac)));
        }
        c
    }

    /// Starts QEMU and connects to its console. The guest starts running
    /// once the console is connected.
    pub fn spawn(&self) -> Result<Vm, Error> {
        let media = match &self.boot {
            Boot::Pvh => self.image.clone(),
            Boot::GrubIso(iso) => iso.clone(),
            Boot::Disk(_) => self.disks.first().cloned().unwrap_or_default(),
        };
        if !media.is_file() {
            return Err(Error::NoImage(media));
        }
        let _ = std::fs::remove_file(self.serial_path());
        let mut cmd = self.command();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::Spawn(qemu_binary(), e))?;
        let stderr = child.stderr.take();
        let stderr_buf = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut s) = stderr {
            let buf = Arc::clone(&stderr_buf);
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut b) = buf.lock() {
                        b.extend_from_slice(&chunk[..n]);
                    }
                }
            });
        }
        // QEMU creates the socket, then waits for us.
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match UnixStream::connect(self.serial_path()) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let stderr = String::from_utf8_lossy(&stderr_buf.lock().map(|b| b.clone()).unwrap_or_default()).into_owned();
                        return Err(Error::EarlyExit { status, stderr });
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Console(e));
                }
            }
        };
        Ok(Vm::start(child, stream, stderr_buf, self.run_dir.clone()))
    }
}

/// Makes a BIOS-bootable CD image in which GRUB loads `image` through
/// multiboot2 with `cmdline`, its menu on the serial console. Needs
/// `grub-mkrescue` with the i386-pc modules and `xorriso`
/// (`apt-get install -y --no-install-recommends grub-pc-bin grub-common xorriso mtools`).
pub fn grub_iso(image: &Path, cmdline: &str, out: &Path) -> Result<(), Error> {
    let root = out.with_extension("isoroot");
    let _ = std::fs::remove_dir_all(&root);
    let io = |e: io::Error| Error::Media(format!("preparing {}: {e}", root.display()));
    std::fs::create_dir_all(root.join("boot/grub")).map_err(io)?;
    std::fs::copy(image, root.join("boot/routerd")).map_err(io)?;
    let cfg = format!(
        "set timeout=0\nset default=0\nserial --unit=0 --speed=115200\nterminal_input serial\n\
         terminal_output serial\nmenuentry \"routerd\" {{\n  multiboot2 /boot/routerd {cmdline}\n  boot\n}}\n"
    );
    std::fs::write(root.join("boot/grub/grub.cfg"), cfg).map_err(io)?;
    let output = Command::new("grub-mkrescue").arg("-o").arg(out).arg(&root).output().map_err(|e| {
        Error::Media(format!(
            "cannot run grub-mkrescue: {e} (apt-get install -y --no-install-recommends grub-pc-bin grub-common xorriso mtools)"
        ))
    })?;
    let _ = std::fs::remove_dir_all(&root);
    if !output.status.success() {
        return Err(Error::Media(format!("grub-mkrescue failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr))));
    }
    Ok(())
}

fn make_run_dir() -> io::Result<PathBuf> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("routerd-qemu-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Why a VM could not be started or did not do what was awaited.
#[derive(Debug)]
pub enum Error {
    NoImage(PathBuf),
    Spawn(PathBuf, io::Error),
    EarlyExit {
        status: ExitStatus,
        stderr: String,
    },
    Console(io::Error),
    /// Boot media could not be made.
    Media(String),
    /// The awaited text did not appear in time; carries the console so far.
    Timeout {
        waiting_for: String,
        console: String,
    },
    /// QEMU exited while we waited for console text.
    Exited {
        status: ExitStatus,
        waiting_for: String,
        console: String,
        stderr: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Error::NoImage(p) => write!(f, "no image at {} (build it with `cargo xtask image`)", p.display()),
            Error::Spawn(q, e) => {
                write!(f, "cannot start {}: {e} (install it: apt-get install -y --no-install-recommends qemu-system-x86)", q.display())
            }
            Error::EarlyExit { status, stderr } => {
                write!(f, "QEMU exited before the console opened ({status}):\n{stderr}")
            }
            Error::Console(e) => write!(f, "cannot connect to the serial console: {e}"),
            Error::Media(m) => f.write_str(m),
            Error::Timeout { waiting_for, console } => {
                write!(f, "timed out waiting for {waiting_for:?} on the console; console so far:\n{console}")
            }
            Error::Exited { status, waiting_for, console, stderr } => {
                write!(f, "QEMU exited ({status}) while waiting for {waiting_for:?}; console:\n{console}\nQEMU stderr:\n{stderr}")
            }
        }
    }
}

impl std::error::Error for Error {}

/// A running VM: QEMU's process and everything its console has printed.
pub struct Vm {
    child: Child,
    console: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    serial: UnixStream,
    run_dir: PathBuf,
    echo: Arc<Mutex<bool>>,
}

impl Vm {
    fn start(child: Child, serial: UnixStream, stderr: Arc<Mutex<Vec<u8>>>, run_dir: PathBuf) -> Vm {
        let console = Arc::new(Mutex::new(Vec::new()));
        let echo = Arc::new(Mutex::new(false));
        Vm::capture(&serial, &console, &echo);
        Vm { child, console, stderr, serial, run_dir, echo }
    }

    /// Appends what `serial` receives to `console` on a thread.
    fn capture(serial: &UnixStream, console: &Arc<Mutex<Vec<u8>>>, echo: &Arc<Mutex<bool>>) {
        if let Ok(mut reader) = serial.try_clone() {
            let console = Arc::clone(console);
            let echo = Arc::clone(echo);
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = reader.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if echo.lock().map(|e| *e).unwrap_or(false) {
                        use std::io::Write;
                        let mut out = io::stdout().lock();
                        let _ = out.write_all(&chunk[..n]);
                        let _ = out.flush();
                    }
                    if let Ok(mut c) = console.lock() {
                        c.extend_from_slice(&chunk[..n]);
                    }
                }
            });
        }
    }

    /// Lets go of the serial socket so another client (routerctl) can
    /// connect: QEMU's socket takes one client at a time. Console output
    /// is not captured until [`Vm::attach_serial`].
    pub fn release_serial(&mut self) {
        let _ = self.serial.shutdown(std::net::Shutdown::Both);
    }

    /// Connects to the serial socket again (after the other client left)
    /// and resumes capturing the console.
    pub fn attach_serial(&mut self, timeout: Duration) -> Result<(), Error> {
        let path = self.run_dir.join("serial.sock");
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(&path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(Error::Console(e)),
            }
        };
        Vm::capture(&stream, &self.console, &self.echo);
        self.serial = stream;
        Ok(())
    }

    /// The serial socket's path (`--port unix:PATH` for routerctl).
    pub fn serial_path(&self) -> PathBuf {
        self.run_dir.join("serial.sock")
    }

    /// Copy console output to stdout as it arrives (from now on).
    pub fn echo_console(&self, on: bool) {
        if let Ok(mut e) = self.echo.lock() {
            *e = on;
        }
    }

    /// The serial line, for writing to the guest.
    pub fn serial(&self) -> &UnixStream {
        &self.serial
    }

    /// Everything the console printed so far (CR LF folded to LF).
    pub fn console(&self) -> String {
        let bytes = self.console.lock().map(|c| c.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).replace("\r\n", "\n")
    }

    fn stderr_text(&self) -> String {
        let bytes = self.stderr.lock().map(|c| c.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until the console contains `text`.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> Result<(), Error> {
        self.wait_for_after(0, text, timeout)
    }

    /// Waits until `text` appears in the console after byte `start` of
    /// [`Vm::console`] (e.g. the length before a command was typed).
    pub fn wait_for_after(&mut self, start: usize, text: &str, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let seen = |c: String| c.get(start..).is_some_and(|tail| tail.contains(text));
        loop {
            if seen(self.console()) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // The reader may still be draining the last bytes.
                thread::sleep(Duration::from_millis(100));
                if seen(self.console()) {
                    return Ok(());
                }
                return Err(Error::Exited { status, waiting_for: text.to_string(), console: self.console(), stderr: self.stderr_text() });
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout { waiting_for: text.to_string(), console: self.console() });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for QEMU to exit; kills it after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(50));
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(Error::Timeout { waiting_for: "QEMU to exit".to_string(), console: self.console() });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops QEMU now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The per-run directory (sockets live here).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(m: &Machine) -> Vec<String> {
        m.command().get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn command_line_names_every_device() {
        let mut m = Machine::new("/tmp/routerd").unwrap();
        m.machine = MachineType::Q35;
        m.cmdline = "routerd.test=shutdown".into();
        m.nics.push(Nic {
            model: NicModel::VirtioNet,
            mac: [0x52, 0x54, 0, 0, 0, 1],
            backend: NetBackend::Dgram { guest: "/r/g0".into(), harness: "/r/h0".into() },
        });
        m.nics.push(Nic { model: NicModel::E1000e, mac: [0x52, 0x54, 0, 0, 0, 2], backend: NetBackend::Tap { ifname: "tap7".into() } });
        let a = args(&m).join(" ");
        assert!(a.contains("-machine q35 -accel tcg"));
        assert!(a.contains("-append routerd.test=shutdown"));
        assert!(a.contains("-netdev dgram,id=net0,local.type=unix,local.path=/r/g0,remote.type=unix,remote.path=/r/h0"));
        assert!(a.contains("-device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01"));
        assert!(a.contains("-netdev tap,id=net1,ifname=tap7,script=no,downscript=no"));
        assert!(a.contains("-device e1000e,netdev=net1,mac=52:54:00:00:00:02"));
        assert!(a.contains("isa-debug-exit,iobase=0xf4,iosize=4"));
        let _ = std::fs::remove_dir_all(&m.run_dir);
    }

    #[test]
    fn missing_image_is_a_clear_error() {
        let m = Machine::new("/nonexistent/routerd").unwrap();
        let e = m.spawn().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("no image at /nonexistent/routerd"), "{e}");
        let _ = std::fs::remove_dir_all(&m.run_dir);
    }
}
