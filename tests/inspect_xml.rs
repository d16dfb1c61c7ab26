//! `inspect --format xml` against virt-inspector's RELAX NG schema (xmllint,
//! the schema from Debian's guestfs-tools as `cargo xtask deps` installs it)
//! and against our own JSON output for the same images.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const RNG: &str = "/usr/local/share/vmie-fixup/virt-inspector.rng";

fn fixture(name: &str) -> PathBuf {
    xtask::fixtures::image(name).unwrap_or_else(|e| panic!("building fixture {name}: {e:#}"))
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmie-fixup"))
        .args(args)
        .output()
        .unwrap()
}

fn xml_of(img: &Path) -> String {
    let out = run(&["inspect", "--format", "xml", img.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_of(img: &Path) -> Value {
    let out = run(&["inspect", "--format", "json", img.to_str().unwrap()]);
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// xmllint --relaxng on `xml`; panics with its complaint.
fn validate(xml: &str, what: &str) {
    assert!(
        Path::new(RNG).is_file(),
        "{RNG} is missing: run `cargo xtask deps` (as root) to fetch virt-inspector.rng"
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("out.xml");
    std::fs::write(&f, xml).unwrap();
    let out = Command::new("xmllint")
        .args(["--noout", "--relaxng", RNG])
        .arg(&f)
        .output()
        .unwrap_or_else(|e| panic!("xmllint ({e}): run `cargo xtask deps` (libxml2-utils)"));
    assert!(
        out.status.success(),
        "{what}: not valid against virt-inspector.rng:\n{}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The XML-decoded text of `s` (the five entities and numeric references).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').unwrap() + i;
        let ent = &rest[i + 1..end];
        out.push(match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            n => char::from_u32(n.strip_prefix('#').unwrap().parse().unwrap()).unwrap(),
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Text of every `<name>...</name>` in `xml`, decoded.
fn texts(xml: &str, name: &str) -> Vec<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut v = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let end = rest.find(&close).unwrap();
        v.push(unescape(&rest[..end]));
        rest = &rest[end..];
    }
    v
}

fn text(xml: &str, name: &str) -> Option<String> {
    let v = texts(xml, name);
    assert!(v.len() <= 1, "{name} more than once");
    v.into_iter().next()
}

/// (attribute `attr`, body) of every `<name attr="...">body</name>`.
fn with_attr(xml: &str, name: &str) -> Vec<(String, String)> {
    let open = format!("<{name} ");
    let close = format!("</{name}>");
    let mut v = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let q1 = rest.find('"').unwrap();
        let q2 = rest[q1 + 1..].find('"').unwrap() + q1 + 1;
        let attr = unescape(&rest[q1 + 1..q2]);
        let gt = rest.find('>').unwrap();
        if rest[..gt].ends_with('/') {
            // <name attr="..."/>: no body.
            v.push((attr, String::new()));
            rest = &rest[gt..];
            continue;
        }
        let end = rest.find(&close).unwrap();
        v.push((attr, rest[gt + 1..end].to_string()));
        rest = &rest[end..];
    }
    v
}

/// Our volume name (`IMAGE partition N`, `IMAGE`) as the /dev name
/// virt-inspector gives a one-disk VM's volume.
fn dev_of(vol: &str, img: &Path) -> String {
    let base = img.display().to_string();
    let rest = vol.strip_prefix(&base).unwrap();
    match rest.strip_prefix(" partition ") {
        Some(n) => format!("/dev/sda{n}"),
        None => {
            assert_eq!(rest, "", "{vol}");
            "/dev/sda".into()
        }
    }
}

/// The JSON filesystem of /dev/sdaN (or the whole disk).
fn json_fs<'a>(doc: &'a Value, dev: &str) -> &'a Value {
    let disk = &doc["disks"][0];
    match dev.strip_prefix("/dev/sda").unwrap() {
        "" => &disk["filesystem"],
        n => {
            let n: u64 = n.parse().unwrap();
            disk["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["number"] == n)
                .map(|p| &p["filesystem"])
                .unwrap()
        }
    }
}

/// A JSON string as XML can carry it: characters XML 1.0 has no place for
/// (C0 controls but tab, LF, CR) become U+FFFD.
fn opt_str(v: &Value) -> Option<String> {
    v.as_str().map(|s| {
        s.chars()
            .map(|c| {
                if c < ' ' && !matches!(c, '\t' | '\n' | '\r') {
                    '\u{FFFD}'
                } else {
                    c
                }
            })
            .collect()
    })
}

/// XML and JSON of `img` agree on one Linux guest.
fn check_linux(img: &Path) {
    let xml = xml_of(img);
    validate(&xml, &img.display().to_string());
    let doc = json_of(img);
    let oses = doc["operating_systems"].as_array().unwrap();
    assert_eq!(oses.len(), 1);
    assert_eq!(texts(&xml, "operatingsystem").len(), 1);
    let os = &oses[0];
    let root = dev_of(os["root"].as_str().unwrap(), img);
    assert_eq!(text(&xml, "root"), Some(root.clone()));
    assert_eq!(text(&xml, "name").as_deref(), Some("linux"));
    assert_eq!(text(&xml, "distro"), opt_str(&os["distro"]));
    assert_eq!(text(&xml, "product_name"), opt_str(&os["product_name"]));
    assert_eq!(
        text(&xml, "major_version"),
        Some(os["major_version"].to_string())
    );
    assert_eq!(
        text(&xml, "minor_version"),
        Some(os["minor_version"].to_string())
    );
    assert_eq!(text(&xml, "arch"), opt_str(&os["arch"]));
    assert_eq!(text(&xml, "hostname"), opt_str(&os["hostname"]));
    assert_eq!(text(&xml, "osinfo"), opt_str(&os["osinfo"]));
    assert!(text(&xml, "osinfo").is_some());
    assert_eq!(text(&xml, "package_format"), opt_str(&os["package_format"]));
    // Every mount point our tree mounted is in the XML, on the same volume.
    let xml_mounts = with_attr(&xml, "mountpoint");
    assert_eq!(xml_mounts[0], (root.clone(), "/".to_string()));
    for (mp, vol) in os["mountpoints"].as_object().unwrap() {
        let dev = dev_of(vol.as_str().unwrap(), img);
        assert!(
            xml_mounts.contains(&(dev.clone(), mp.clone())),
            "{mp} on {dev} missing from {xml_mounts:?}"
        );
    }
    // Every filesystem: type, label and UUID as the JSON's probe says.
    let fss = with_attr(&xml, "filesystem");
    assert!(fss.iter().any(|(d, _)| d == &root));
    for (dev, body) in &fss {
        if body.is_empty() {
            // A device fstab names that is not part of the VM.
            continue;
        }
        let fs = json_fs(&doc, dev);
        assert_eq!(text(body, "uuid"), opt_str(&fs["uuid"]), "{dev}");
        assert_eq!(text(body, "label"), opt_str(&fs["label"]), "{dev}");
        let kind = fs["kind"].as_str().unwrap();
        assert_eq!(text(body, "type").as_deref(), Some(kind), "{dev}");
    }
    // Sorted as virt-inspector sorts them.
    let devs: Vec<&String> = fss.iter().map(|(d, _)| d).collect();
    let mut sorted = devs.clone();
    sorted.sort();
    assert_eq!(devs, sorted);
}

#[test]
fn linux_fixtures_validate_and_agree_with_json() {
    for name in ["demo", "rhel8", "gpt-mixed", "gpt-debian"] {
        check_linux(&fixture(name));
    }
    // The demo guest in detail: swap is a filesystem, not a mount point.
    let xml = xml_of(&fixture("demo"));
    assert_eq!(text(&xml, "osinfo").as_deref(), Some("debian12"));
    assert_eq!(
        with_attr(&xml, "mountpoint"),
        [
            ("/dev/sda1".to_string(), "/".to_string()),
            ("/dev/sda6".to_string(), "/srv/data".to_string())
        ]
    );
    let fss: Vec<String> = with_attr(&xml, "filesystem")
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(fss, ["/dev/sda1", "/dev/sda5", "/dev/sda6"]);
    let xml = xml_of(&fixture("rhel8"));
    assert_eq!(text(&xml, "osinfo").as_deref(), Some("rhel8.6"));
}

/// A whole-disk ext4 guest whose host name and label hold every character
/// XML must escape (and a control character XML cannot hold at all).
#[test]
fn hostile_strings_are_escaped_and_still_validate() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    for d in ["etc", "bin"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    let hostname = "h<&\"'>x]]>\u{1}y";
    std::fs::write(tree.join("etc/hostname"), format!("{hostname}\n")).unwrap();
    std::fs::write(
        tree.join("etc/fstab"),
        "LABEL=a<&\"'>b / ext4 defaults 0 1\n",
    )
    .unwrap();
    std::fs::write(
        tree.join("etc/os-release"),
        // VERSION_ID with its minor version: os-release is the whole answer
        // (without it, virt-inspector's product name is debian_version's).
        "ID=debian\nVERSION_ID=\"11.9\"\nPRETTY_NAME=\"Debian <&\\\"'> 11\"\n",
    )
    .unwrap();
    std::fs::write(tree.join("etc/debian_version"), "11.9\n").unwrap();
    let img = dir.path().join("hostile.raw");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "a<&\"'>b", "-d"])
        .arg(&tree)
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(&img);
    let os = &doc["operating_systems"][0];
    // What the guest says, as JSON carries it.
    let host_json = os["hostname"].as_str().unwrap().to_string();
    assert!(host_json.starts_with("h<&\"'>x]]>"), "{host_json}");
    let xml = xml_of(&img);
    validate(&xml, "hostile guest");
    assert!(
        xml.contains("<hostname>h&lt;&amp;\"'&gt;x]]&gt;\u{FFFD}y</hostname>"),
        "{xml}"
    );
    assert!(xml.contains("<label>a&lt;&amp;\"'&gt;b</label>"), "{xml}");
    assert_eq!(
        text(&xml, "product_name").as_deref(),
        Some("Debian <&\"'> 11")
    );
    // Mount point from LABEL= with the hostile label resolved.
    assert_eq!(
        with_attr(&xml, "mountpoint"),
        [("/dev/sda".to_string(), "/".to_string())]
    );
    check_linux(&img);
}

/// A usr-merged root whose `/usr` is another, read-only filesystem (the
/// layout of image-based distributions): on the root alone `/bin` is a
/// dangling `usr/bin` symlink and there is no `/etc/os-release`; the root is
/// still found (libguestfs accepts the symlink too), `/usr` is mounted from
/// fstab, and the release comes from `/usr/lib/os-release`.
#[test]
fn a_usr_merged_root_with_a_separate_read_only_usr() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let usr = dir.path().join("usr");
    for d in [
        root.join("etc"),
        root.join("usr"),
        usr.join("lib"),
        usr.join("bin"),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
    std::fs::write(root.join("etc/hostname"), "usrsplit\n").unwrap();
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(
        root.join("etc/fstab"),
        "UUID=6b3c1a56-0d0f-4f4c-9a55-1e2a6b0c0001 / ext4 defaults 0 1\n\
         UUID=6b3c1a56-0d0f-4f4c-9a55-1e2a6b0c0002 /usr ext4 ro 0 2\n",
    )
    .unwrap();
    std::fs::write(
        usr.join("lib/os-release"),
        "NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=39\nPRETTY_NAME=\"Fedora Linux 39\"\n",
    )
    .unwrap();
    let mkfs = |tree: &Path, uuid: &str, out: &Path| {
        std::fs::File::create(out)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let o = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-U", uuid, "-d"])
            .arg(tree)
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let rootfs = dir.path().join("root.ext4");
    let usrfs = dir.path().join("usr.ext4");
    mkfs(&root, "6b3c1a56-0d0f-4f4c-9a55-1e2a6b0c0001", &rootfs);
    mkfs(&usr, "6b3c1a56-0d0f-4f4c-9a55-1e2a6b0c0002", &usrfs);
    let img = dir.path().join("usrsplit.raw");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(34 << 20)
        .unwrap();
    let mut sf = Command::new("sfdisk")
        .arg("-q")
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        sf.stdin
            .take()
            .unwrap()
            .write_all(b"start=2048, size=32768, type=83\nstart=34816, size=32768, type=83\n")
            .unwrap();
    }
    assert!(sf.wait().unwrap().success());
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    for (src, at) in [(&rootfs, 1u64 << 20), (&usrfs, 17u64 << 20)] {
        std::os::unix::fs::FileExt::write_all_at(&f, &std::fs::read(src).unwrap(), at).unwrap();
    }
    drop(f);
    let doc = json_of(&img);
    let os = &doc["operating_systems"][0];
    assert_eq!(os["distro"], "fedora", "{doc:#}");
    assert_eq!(os["major_version"], 39);
    assert_eq!(os["product_name"], "Fedora Linux 39");
    assert_eq!(os["hostname"], "usrsplit");
    let xml = xml_of(&img);
    validate(&xml, "usr-split guest");
    let mut mps = with_attr(&xml, "mountpoint");
    mps.sort();
    assert_eq!(
        mps,
        [
            ("/dev/sda1".to_string(), "/".to_string()),
            ("/dev/sda2".to_string(), "/usr".to_string())
        ]
    );
    check_linux(&img);
}

#[test]
fn only_inspect_takes_xml() {
    let img = fixture("demo");
    let s = img.to_str().unwrap();
    for args in [
        vec!["ls", "--format", "xml", s, "/"],
        vec!["--dry-run", "--format", "xml", s],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("invalid value 'xml'") && err.contains("human, json"),
            "{args:?}: {err}"
        );
    }
}

/// Disks without a guest: virt-inspector (guestfs-tools 1.48) prints an
/// empty `<operatingsystems/>` and exits 0 (a document its own schema does
/// not accept); we print the same bytes.
#[test]
fn no_guest_gives_virt_inspectors_empty_document() {
    let out = run(&[
        "inspect",
        "--format",
        "xml",
        fixture("whole-ext2").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "<?xml version=\"1.0\"?>\n<operatingsystems/>\n"
    );
}

/// The Windows test disk (dfvfs's Windows-made NTFS volume with virt-v2v's
/// hives), shared with tests/ntfs.rs.
#[path = "common/windows.rs"]
mod windows;

use windows::windows_disk;

#[test]
fn windows_guests_validate_and_agree_with_json() {
    for (software, osinfo, variant) in [
        ("win2k22-software.reg", "win2k22", "Server"),
        ("win11-software.reg", "win11", "Client"),
        ("win10-software.reg", "win10", "Client"),
        ("win7-32-software.reg", "win7", "Client"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let disk = windows_disk(dir.path(), software);
        let xml = xml_of(&disk);
        validate(&xml, software);
        let doc = json_of(&disk);
        let os = &doc["operating_systems"][0];
        assert_eq!(os["osinfo"], osinfo, "{software}");
        assert_eq!(text(&xml, "osinfo").as_deref(), Some(osinfo), "{software}");
        assert_eq!(text(&xml, "name").as_deref(), Some("windows"));
        assert_eq!(text(&xml, "distro").as_deref(), Some("windows"));
        assert_eq!(text(&xml, "root").as_deref(), Some("/dev/sda1"));
        assert_eq!(text(&xml, "product_name"), opt_str(&os["product_name"]));
        assert_eq!(text(&xml, "product_variant").as_deref(), Some(variant));
        assert_eq!(
            text(&xml, "major_version"),
            Some(os["major_version"].to_string())
        );
        assert_eq!(
            text(&xml, "minor_version"),
            Some(os["minor_version"].to_string())
        );
        assert_eq!(
            text(&xml, "windows_systemroot"),
            opt_str(&os["windows_systemroot"])
        );
        assert_eq!(
            text(&xml, "windows_current_control_set"),
            opt_str(&os["windows_current_control_set"])
        );
        assert_eq!(text(&xml, "hostname"), opt_str(&os["hostname"]));
        assert_eq!(
            with_attr(&xml, "mountpoint"),
            [("/dev/sda1".to_string(), "/".to_string())]
        );
        let fss = with_attr(&xml, "filesystem");
        assert_eq!(fss.len(), 1);
        let fs = json_fs(&doc, "/dev/sda1");
        assert_eq!(text(&fss[0].1, "type").as_deref(), Some("ntfs"));
        assert_eq!(text(&fss[0].1, "uuid"), opt_str(&fs["uuid"]));
    }
}

/// Parity, byte for byte: `fixtures/virt-inspector/NAME.xml` is what
/// virt-inspector (guestfs-tools 1.48.2, libguestfs 1.48 on Debian 12,
/// `virt-inspector --no-applications --no-icon -a DISK...`) printed for the
/// fixture NAME; our `inspect --format xml` must print the same bytes.
#[test]
fn the_same_document_as_virt_inspector() {
    let dir = xtask::fixtures::workspace_root().join("fixtures/virt-inspector");
    let mut checked = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let want_path = e.unwrap().path();
        if want_path.extension().is_none_or(|x| x != "xml") {
            continue;
        }
        let name = want_path.file_stem().unwrap().to_str().unwrap().to_string();
        let disks: Vec<PathBuf> = if name.starts_with("lvm-") {
            xtask::lvm::fixture(&name)
                .unwrap_or_else(|e| panic!("building LVM fixture {name}: {e:#}"))
                .disks
        } else {
            vec![fixture(&name)]
        };
        let mut args = vec!["inspect".to_string(), "--format".into(), "xml".into()];
        args.extend(disks.iter().map(|d| d.display().to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&argv);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = std::fs::read_to_string(&want_path).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want,
            "{name}: not what virt-inspector printed"
        );
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} reference documents");
}
