//! Developer tasks, run as `cargo xtask <task>`.
//!
//! Each task sets up what it needs: it checks the system packages the task
//! uses and installs the missing ones with apt-get when running as root (or
//! stops and prints the exact install command when not).

use routerd_qemu::{self as qemu, Machine, MachineType, NetBackend, Nic, NicModel};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  lab [--scenario hybrid|two-site] [--once] [--keep] [--variant …] [routerctl lab options]
          the two-box lab: build the image and routerctl, boot two boxes in
          QEMU, provision both, doctor, traffic; hybrid (default): seed 000's
          on-prem and cloud boxes; two-site: seed 003's roz and wro with the
          shipped examples, DHCP, DNS, NAT, the VXLAN overlay and a dynamic
          IP change (runs `routerctl lab`; see `cargo run -p routerctl -- lab --help`)
  box [--machine pc|q35] [--nic virtio|e1000e] [--once]
          boot one unconfigured box with two NICs, showing its console
          (type `status`, `help`); --once shuts it down after boot
  test    install what the tests need, check formatting and lints, build the
          image, run every test
  image   build the firmware image and print where it landed
  deps    check (and as root, install) the system packages of all tasks
";

/// (command that must exist, Debian package that provides it)
const LAB_PACKAGES: &[(&str, &str)] = &[("qemu-system-x86_64", "qemu-system-x86")];
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("grub-file", "grub-common"),
    ("grub-mkrescue", "grub-common"),
    ("/usr/lib/grub/i386-pc/multiboot2.mod", "grub-pc-bin"),
    ("xorriso", "xorriso"),
    ("mformat", "mtools"),
    // `routerctl image build` and its tests: UEFI GRUB, OVMF for UEFI boots,
    // qemu-img for qcow2 output and `qemu-img check`.
    ("/usr/lib/grub/x86_64-efi/multiboot2.mod", "grub-efi-amd64-bin"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "ovmf"),
    ("qemu-img", "qemu-utils"),
    ("ip", "iproute2"),
    ("wireguard-go", "wireguard-go"),
    ("wg", "wireguard-tools"),
    ("ping", "iputils-ping"),
    // The DHCP (and DNS) server of the WAN tests; -base: no system service.
    ("dnsmasq", "dnsmasq-base"),
    // `routerctl capture`'s tests read the pcap back (`tshark -r`).
    ("tshark", "tshark"),
    // The EVPN peer of the BGP interop test (firmware/bgp/tests/frr.rs).
    ("/usr/lib/frr/bgpd", "frr"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("lab") => two_box_lab(&args[1..]),
        Some("box") => lab(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("image") => build_image().map(|p| {
            report_image(&p);
        }),
        Some("deps") => ensure_packages(TEST_PACKAGES),
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(Failure::Usage(format!("unknown task {other:?}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("error: {m}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    /// Bad usage or missing prerequisites the user must install (exit 2).
    Usage(String),
    /// The task ran and failed (exit 1).
    Failed(String),
}

/// The checkout xtask runs for: `cargo run` (what `cargo xtask` is) says
/// where the package it runs lives; the path compiled in is only a fallback,
/// because a copied checkout sharing a target directory would otherwise
/// build the old one.
fn root() -> PathBuf {
    let xtask = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    xtask.parent().map(Path::to_path_buf).unwrap_or(xtask)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// Cargo for the checkout, with the environment a shell would give it:
/// `cargo run` (which `cargo xtask` is) sets the package variables of xtask
/// itself, and build scripts that watch them (ring's, the image's) would
/// otherwise rebuild every time a plain `cargo build` and `cargo xtask`
/// alternate.
fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        let set_by_cargo_run = k.starts_with("CARGO_PKG_")
            || matches!(k, "CARGO_MANIFEST_DIR" | "CARGO_MANIFEST_PATH" | "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE");
        if set_by_cargo_run {
            c.env_remove(k);
        }
    }
    c
}

fn run(mut c: Command, what: &str) -> Result<(), Failure> {
    let status = c.status().map_err(|e| Failure::Failed(format!("{what}: cannot start: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure::Failed(format!("{what} failed ({status})")))
    }
}

fn build_image() -> Result<PathBuf, Failure> {
    eprintln!("building the firmware image (cargo build -p routerd --release)");
    let mut c = cargo();
    c.args(["build", "--package", "routerd", "--release"]);
    run(c, "building the image")?;
    Ok(target_dir().join("release").join("routerd"))
}

fn report_image(path: &Path) {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!("image: {} ({} bytes, {:.1} KiB)", path.display(), size, size as f64 / 1024.0);
}

fn exists(what: &str) -> bool {
    if what.starts_with('/') {
        return Path::new(what).exists();
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from)).any(|dir| dir.join(what).is_file())
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Installs missing packages as root; otherwise names the command to run.
fn ensure_packages(wanted: &[(&str, &str)]) -> Result<(), Failure> {
    let mut missing: Vec<&str> = wanted.iter().filter(|(cmd, _)| !exists(cmd)).map(|(_, pkg)| *pkg).collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    // QEMU's packages must be of one version: where the machine has one
    // from backports, the missing ones come from there too.
    let backports = backports_of(QEMU_FAMILY);
    let (from_backports, missing): (Vec<&str>, Vec<&str>) =
        missing.into_iter().partition(|p| backports.is_some() && QEMU_FAMILY.contains(p));
    let line = format!("apt-get install -y --no-install-recommends --no-remove {}", missing.join(" "));
    if !is_root() || !exists("apt-get") {
        let mut how = String::new();
        if let Some(suite) = backports.filter(|_| !from_backports.is_empty()) {
            how += &format!("    sudo apt-get install -y --no-install-recommends --no-remove -t {suite} {}\n", from_backports.join(" "));
        }
        if !missing.is_empty() {
            how += &format!("    sudo {line}\n");
        }
        return Err(Failure::Usage(format!("missing system packages; install them with:\n{how}")));
    }
    // The tests start their own daemons (FRR, dnsmasq) in namespaces: a
    // package's service must not start on this machine at install.
    let _no_services = NoServiceStarts::arm();
    if let Some(suite) = backports.filter(|_| !from_backports.is_empty()) {
        install_from_backports(suite, &from_backports)?;
    }
    if !missing.is_empty() {
        eprintln!("installing missing system packages: {}", missing.join(" "));
        let mut update = Command::new("apt-get");
        update.args(["update", "-qq"]).env("DEBIAN_FRONTEND", "noninteractive");
        run(update, "apt-get update")?;
        let mut install = Command::new("apt-get");
        // --no-remove: apt fails rather than take a package off the machine.
        install
            .args(["install", "-y", "-qq", "--no-install-recommends", "--no-remove"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(install, &line)?;
    }
    drop(_no_services);
    if missing.contains(&"frr") && exists("systemctl") {
        // Nor at the machine's next boot (the tests run FRR themselves).
        let _ = Command::new("systemctl").args(["disable", "--now", "frr"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
    let still: Vec<&str> = wanted.iter().filter(|(cmd, _)| !exists(cmd)).map(|(c, _)| *c).collect();
    if still.is_empty() {
        Ok(())
    } else {
        Err(Failure::Failed(format!("still missing after install: {}", still.join(" "))))
    }
}

/// Debian packages built from QEMU's one source: apt insists they share a
/// version (qemu-utils from bookworm-backports breaks bookworm's
/// qemu-system-x86, and installing that one would remove it).
const QEMU_FAMILY: &[&str] = &["qemu-system-x86", "qemu-utils"];

/// The backports suite an installed package of `family` came from, by its
/// version (`…~bpo12+1` is bookworm-backports). This workplace's machines
/// ship qemu-utils 10 from there.
fn backports_of(family: &[&str]) -> Option<&'static str> {
    family.iter().find_map(|pkg| {
        let out = Command::new("dpkg-query").args(["-W", "-f", "${db:Status-Abbrev}${Version}", pkg]).output().ok()?;
        let v = String::from_utf8_lossy(&out.stdout).into_owned();
        if !v.starts_with("ii") {
            return None;
        }
        [("~bpo12", "bookworm-backports"), ("~bpo13", "trixie-backports")].iter().find(|(tag, _)| v.contains(tag)).map(|(_, s)| *s)
    })
}

/// Install `packages` from Debian's `suite` (a backports suite) without
/// adding it to the machine's sources: apt reads a temporary source list
/// (the suite plus the machine's own /etc/apt/sources.list) and package
/// lists, the machine's sources.list.d as always.
fn install_from_backports(suite: &str, packages: &[&str]) -> Result<(), Failure> {
    eprintln!("installing from {suite} (to match the installed QEMU): {}", packages.join(" "));
    let dir = std::env::temp_dir().join(format!("routerd-apt-{}", std::process::id()));
    let lists = dir.join("lists");
    let fail = |e: std::io::Error| Failure::Failed(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(lists.join("partial")).map_err(fail)?;
    let mut sources = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    sources.push_str(&format!("\ndeb http://deb.debian.org/debian {suite} main\n"));
    std::fs::write(dir.join("sources.list"), sources).map_err(fail)?;
    let opts = [
        "-o".to_string(),
        format!("Dir::Etc::sourcelist={}", dir.join("sources.list").display()),
        "-o".to_string(),
        format!("Dir::State::lists={}", lists.display()),
    ];
    let apt = || {
        let mut c = Command::new("apt-get");
        c.args(&opts).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    let mut update = apt();
    update.args(["update", "-qq"]);
    let result = run(update, &format!("apt-get update (with {suite})")).and_then(|()| {
        let mut install = apt();
        install.args(["install", "-y", "-qq", "--no-install-recommends", "--no-remove", "-t", suite]).args(packages);
        run(install, &format!("apt-get install --no-install-recommends --no-remove -t {suite} {}", packages.join(" ")))
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Debian's `policy-rc.d` convention: while it exists and exits 101, a
/// package's maintainer scripts start no service. Put in place for an
/// install when the machine has none, removed after.
struct NoServiceStarts(Option<&'static str>);

impl NoServiceStarts {
    const PATH: &'static str = "/usr/sbin/policy-rc.d";

    fn arm() -> NoServiceStarts {
        use std::os::unix::fs::PermissionsExt;
        if std::path::Path::new(Self::PATH).exists() {
            return NoServiceStarts(None);
        }
        let written = std::fs::write(Self::PATH, "#!/bin/sh\n# cargo xtask deps: no service starts during this install\nexit 101\n")
            .and_then(|()| std::fs::set_permissions(Self::PATH, std::fs::Permissions::from_mode(0o755)));
        NoServiceStarts(written.is_ok().then_some(Self::PATH))
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn test(args: &[String]) -> Result<(), Failure> {
    if let Some(a) = args.first() {
        return Err(Failure::Usage(format!("`test` takes no options, got {a:?}")));
    }
    ensure_packages(TEST_PACKAGES)?;
    lint()?;
    let image = build_image()?;
    report_image(&image);
    let mut c = cargo();
    c.args(["test", "--workspace"]).env("ROUTERD_IMAGE", &image);
    run(c, "the test suite")
}

/// The formatter and the linter: the tree as `rustfmt.toml` formats it, and
/// no clippy warning in any crate (the image's binary checked on its own:
/// a bare-metal binary has no test target).
fn lint() -> Result<(), Failure> {
    let mut c = cargo();
    c.args(["fmt", "--all", "--", "--check"]);
    run(c, "cargo fmt --check (run `cargo fmt --all` to fix)")?;
    let mut c = cargo();
    c.args(["clippy", "--workspace", "--all-targets", "--exclude", "routerd", "--", "-D", "warnings"]);
    run(c, "cargo clippy on the workspace")?;
    let mut c = cargo();
    c.args(["clippy", "-p", "routerd", "--release", "--", "-D", "warnings"]);
    run(c, "cargo clippy on the image")
}

/// `routerctl lab` with a freshly built image.
fn two_box_lab(args: &[String]) -> Result<(), Failure> {
    ensure_packages(LAB_PACKAGES)?;
    let image = build_image()?;
    report_image(&image);
    let mut c = cargo();
    c.args(["run", "--quiet", "--package", "routerctl", "--", "lab"]).args(args).env("ROUTERD_IMAGE", &image);
    run(c, "the lab")
}

fn lab(args: &[String]) -> Result<(), Failure> {
    let mut machine = MachineType::Pc;
    let mut model = NicModel::VirtioNet;
    let mut once = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--machine" => {
                machine = match it.next().map(String::as_str) {
                    Some("pc") => MachineType::Pc,
                    Some("q35") => MachineType::Q35,
                    v => return Err(Failure::Usage(format!("--machine: expected pc or q35, got {v:?}"))),
                }
            }
            "--nic" => {
                model = match it.next().map(String::as_str) {
                    Some("virtio") => NicModel::VirtioNet,
                    Some("e1000e") => NicModel::E1000e,
                    v => return Err(Failure::Usage(format!("--nic: expected virtio or e1000e, got {v:?}"))),
                }
            }
            "--once" => once = true,
            other => return Err(Failure::Usage(format!("lab: unknown option {other:?}"))),
        }
    }
    ensure_packages(LAB_PACKAGES)?;
    let image = build_image()?;
    report_image(&image);

    let mut m = Machine::new(&image).map_err(|e| Failure::Failed(format!("run directory: {e}")))?;
    m.machine = machine;
    if once {
        m.cmdline = "routerd.test=shutdown".into();
    }
    for (n, name) in ["lan0", "wan0"].iter().enumerate() {
        m.nics.push(Nic {
            model,
            mac: [0x52, 0x54, 0x00, 0x1a, 0xb0, n as u8],
            backend: NetBackend::Dgram {
                guest: m.run_dir.join(format!("{name}.guest.sock")),
                harness: m.run_dir.join(format!("{name}.lab.sock")),
            },
        });
    }
    eprintln!("starting QEMU ({machine:?}, 2 x {model:?}, TCG); console follows{}", if once { "" } else { " — Ctrl-C to stop" });
    let started = Instant::now();
    // Ctrl-C reaches QEMU (the same process group) and ends it; xtask
    // itself only notes it, so it lives on to remove the run directory.
    interrupt::catch();
    let mut vm = m.spawn().map_err(|e| Failure::Failed(e.to_string()))?;
    vm.echo_console(true);
    // What the user types goes to the box's console (line by line).
    if let Ok(mut serial) = vm.serial().try_clone() {
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if serial.write_all(line.as_bytes()).and_then(|()| serial.write_all(b"\r")).is_err() {
                    break;
                }
            }
        });
    }
    if let Err(e) = vm.wait_for("boot: ready in ", Duration::from_secs(60)) {
        return Err(Failure::Failed(e.to_string()));
    }
    eprintln!("(console reached \"boot: ready\" {:.0} ms after QEMU started)", started.elapsed().as_secs_f64() * 1000.0);
    let limit = if once { Duration::from_secs(60) } else { Duration::from_secs(u64::MAX / 4) };
    let status = vm.wait_exit(limit).map_err(|e| Failure::Failed(e.to_string()))?;
    if interrupt::caught() {
        eprintln!("stopped (Ctrl-C); run directory removed");
        return Ok(());
    }
    match status.code() {
        Some(qemu::EXIT_CLEAN) => {
            eprintln!("routerd shut down cleanly");
            Ok(())
        }
        Some(qemu::EXIT_PANIC) => Err(Failure::Failed("routerd panicked (see the console above)".into())),
        _ => Err(Failure::Failed(format!("QEMU ended: {status}"))),
    }
}

/// Ctrl-C during `box`: noted, not fatal to xtask.
mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};

    static CAUGHT: AtomicBool = AtomicBool::new(false);

    extern "C" fn note(_: libc::c_int) {
        CAUGHT.store(true, Ordering::Relaxed);
    }

    /// From now on SIGINT only sets the flag. A handler (not `SIG_IGN`) is
    /// reset to the default in children at exec, so QEMU still ends on it.
    pub fn catch() {
        // SAFETY: installs an async-signal-safe handler (one atomic store)
        // for SIGINT; no other code in xtask handles signals.
        unsafe { libc::signal(libc::SIGINT, note as *const () as libc::sighandler_t) };
    }

    pub fn caught() -> bool {
        CAUGHT.load(Ordering::Relaxed)
    }
}
