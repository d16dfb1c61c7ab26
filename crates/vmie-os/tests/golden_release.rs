#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{memfs_from, realdata, require};
use vmie_guestfs::MemFs;
use vmie_os::{inspect_distro, InspectOptions};

/// chef/os_release: one os-release file per sample, named DISTRO_VERSION.
/// Expected (virt-inspector distro, major, minor). `unknown` = a distro
/// virt-inspector has no name for (the version is still checked).
const CHEF: &[(&str, &str, u32, u32)] = &[
    ("alma_10", "almalinux", 10, 0),
    ("alma_8", "almalinux", 8, 10),
    ("alma_9", "almalinux", 9, 6),
    ("alpine_3_10", "alpinelinux", 3, 10),
    ("alpine_3_11", "alpinelinux", 3, 11),
    ("alpine_3_12", "alpinelinux", 3, 12),
    ("alpine_3_13", "alpinelinux", 3, 13),
    ("alpine_3_14", "alpinelinux", 3, 14),
    ("alpine_3_15", "alpinelinux", 3, 15),
    ("alpine_3_16", "alpinelinux", 3, 16),
    ("alpine_3_17", "alpinelinux", 3, 17),
    ("alpine_3_18", "alpinelinux", 3, 18),
    ("alpine_3_19", "alpinelinux", 3, 19),
    ("alpine_3_20", "alpinelinux", 3, 20),
    ("alpine_3_21", "alpinelinux", 3, 21),
    ("alpine_3_22", "alpinelinux", 3, 22),
    ("alpine_3_23", "alpinelinux", 3, 23),
    ("alpine_3_8", "alpinelinux", 3, 8),
    ("alpine_3_9", "alpinelinux", 3, 9),
    ("amazon_2", "amazonlinux", 2, 0),
    ("amazon_2018", "amazonlinux", 2018, 3),
    ("amazon_2023", "amazonlinux", 2023, 0),
    ("antergos", "unknown", 18, 11),
    ("arch", "archlinux", 0, 0),
    ("archarm", "archlinux", 0, 0),
    ("arcolinux", "unknown", 0, 0),
    ("azurelinux_3", "azurelinux", 3, 0),
    ("bottlerocket", "amazonlinux", 2, 0),
    ("buildroot", "buildroot", 2019, 2),
    ("cachyos", "unknown", 20251228, 0),
    ("cbl-mariner_2", "azurelinux", 2, 0),
    ("centos_7", "centos", 7, 0),
    ("centos_8", "centos", 8, 0),
    ("centos_stream_8", "centos", 8, 0),
    ("centos_stream_9", "centos", 9, 0),
    ("clearlinux_1", "clearlinux", 38250, 0),
    ("clearos_7", "unknown", 7, 0),
    ("coreos", "coreos", 766, 3),
    ("cos_97", "unknown", 97, 0),
    ("cumulus_3_7", "unknown", 3, 7),
    ("cumulus_5_12", "unknown", 5, 12),
    ("debian_10", "debian", 10, 0),
    ("debian_11", "debian", 11, 0),
    ("debian_12", "debian", 12, 0),
    ("debian_13", "debian", 13, 0),
    ("debian_7", "debian", 7, 0),
    ("debian_8", "debian", 8, 0),
    ("debian_9", "debian", 9, 0),
    ("elementary_5", "unknown", 5, 0),
    ("elementary_6", "unknown", 6, 0),
    ("elementary_7", "unknown", 7, 0),
    ("endeavouros", "unknown", 0, 0),
    ("fedora_28", "fedora", 28, 0),
    ("fedora_29", "fedora", 29, 0),
    ("fedora_30", "fedora", 30, 0),
    ("fedora_31", "fedora", 31, 0),
    ("fedora_32", "fedora", 32, 0),
    ("fedora_33", "fedora", 33, 0),
    ("fedora_34", "fedora", 34, 0),
    ("fedora_35", "fedora", 35, 0),
    ("fedora_36", "fedora", 36, 0),
    ("fedora_37", "fedora", 37, 0),
    ("fedora_38", "fedora", 38, 0),
    ("fedora_39", "fedora", 39, 0),
    ("fedora_40", "fedora", 40, 0),
    ("fedora_41", "fedora", 41, 0),
    ("fedora_42", "fedora", 42, 0),
    ("fedora_43", "fedora", 43, 0),
    ("flatcar", "flatcar", 4459, 0),
    ("gardenlinux", "unknown", 2, 0),
    ("gentoo_214", "gentoo", 2, 14),
    ("gentoo_218", "gentoo", 2, 18),
    ("hce_2", "unknown", 2, 0),
    ("ios_xr_6", "unknown", 6, 0),
    ("kali_2018_4", "kalilinux", 2018, 4),
    ("kali_2019_4", "kalilinux", 2019, 4),
    ("kali_2025_4", "kalilinux", 2025, 4),
    ("kubuntu_22_04", "ubuntu", 22, 4),
    ("kubuntu_24_04", "ubuntu", 24, 4),
    ("linuxmint_18", "linuxmint", 18, 2),
    ("linuxmint_19", "linuxmint", 19, 3),
    ("linuxmint_20", "linuxmint", 20, 3),
    ("linuxmint_21", "linuxmint", 21, 3),
    ("linuxmint_22", "linuxmint", 22, 0),
    ("lubuntu_22_04", "ubuntu", 22, 4),
    ("lubuntu_24_04", "ubuntu", 24, 4),
    ("mageia_6", "mageia", 6, 0),
    ("mageia_9", "mageia", 9, 0),
    ("manjaro", "unknown", 0, 0),
    ("manjaro-arm", "unknown", 0, 0),
    ("mxlinux", "debian", 12, 0),
    ("nexus_7", "unknown", 7, 0),
    ("nixos", "nixos", 18, 9),
    ("nobara", "unknown", 40, 0),
    ("openeuler", "openeuler", 24, 3),
    ("opensuse_13", "opensuse", 13, 2),
    ("opensuseleap_15", "opensuse", 15, 6),
    ("opensuseleap_16", "opensuse", 16, 0),
    ("opensuseleap_42_3", "opensuse", 42, 3),
    ("opensusetumbleweed", "opensuse", 20240823, 0),
    ("openwrt_2203", "unknown", 22, 3),
    ("oracle_7", "oraclelinux", 7, 9),
    ("oracle_8", "oraclelinux", 8, 7),
    ("oracle_9", "oraclelinux", 9, 1),
    ("parrot", "unknown", 4, 11),
    ("photon_1", "photon", 1, 0),
    ("photon_2", "photon", 2, 0),
    ("photon_3", "photon", 3, 0),
    ("pop_os_22_04", "unknown", 22, 4),
    ("rancheros_1_4", "unknown", 1, 4),
    ("raspbian_10", "debian", 10, 0),
    ("raspbian_11", "debian", 11, 0),
    ("raspbian_8", "debian", 8, 0),
    ("redhat_10", "rhel", 10, 0),
    ("redhat_7", "rhel", 7, 5),
    ("redhat_8", "rhel", 8, 10),
    ("redhat_9", "rhel", 9, 6),
    ("rocky_8", "rocky", 8, 9),
    ("rocky_9", "rocky", 9, 3),
    ("scientific_7", "scientificlinux", 7, 5),
    ("slackware_14_2", "slackware", 14, 2),
    ("sled_12_3", "sles", 12, 3),
    ("sled_15", "sles", 15, 0),
    ("sles_11", "sles", 11, 4),
    ("sles_12", "sles", 12, 5),
    ("sles_15", "sles", 15, 7),
    ("sles_sap_12_0", "sles", 12, 0),
    ("sles_sap_12_1", "sles", 12, 1),
    ("sles_sap_12_2", "sles", 12, 2),
    ("sles_sap_12_3", "sles", 12, 3),
    ("steamos", "unknown", 3, 7),
    ("suse-microos", "opensuse", 5, 1),
    ("ubios", "unknown", 1, 12),
    ("ubuntu_1404", "ubuntu", 14, 4),
    ("ubuntu_1604", "ubuntu", 16, 4),
    ("ubuntu_1804", "ubuntu", 18, 4),
    ("ubuntu_2004", "ubuntu", 20, 4),
    ("ubuntu_2204", "ubuntu", 22, 4),
    ("ubuntu_2404", "ubuntu", 24, 4),
    ("ubuntu_2504", "ubuntu", 25, 4),
    ("ubuntu_2510", "ubuntu", 25, 10),
    ("ubuntubudgie_24_04", "ubuntu", 24, 4),
    ("ubuntumate_24_04", "ubuntu", 24, 4),
    ("ubuntuunity_22_04", "ubuntu", 22, 4),
    ("ubuntuunity_24_04", "ubuntu", 24, 4),
    ("virtuozzo_7", "virtuozzo", 7, 0),
    ("wolfi", "unknown", 20230201, 0),
    ("wrlinux", "unknown", 7, 0),
    ("xbian", "unknown", 1, 0),
    ("xcp-ng_7_4", "xcp-ng", 7, 4),
    ("xcp-ng_7_5", "xenserver", 7, 5),
    ("xcp-ng_8", "xenserver", 8, 2),
    ("xenserver_7_6", "xenserver", 7, 6),
    ("xubuntu_24_04", "ubuntu", 24, 4),
    ("zorin", "unknown", 16, 0),
];

/// python-distro: a directory tree per sample (os-release, legacy files).
const PYTHON_DISTRO: &[(&str, &str, u32, u32)] = &[
    ("almalinux10", "almalinux", 10, 0),
    ("alpine", "alpinelinux", 3, 23),
    ("altlinux10", "altlinux", 10, 1),
    ("amazon2014", "amazonlinux", 2014, 3),
    ("amazon2016", "amazonlinux", 2016, 3),
    ("amazon2023", "amazonlinux", 2023, 0),
    ("arch", "archlinux", 0, 0),
    ("armbian", "debian", 10, 0),
    ("bttcb1", "debian", 11, 0),
    ("buildroot", "buildroot", 2022, 2),
    ("centos5", "centos", 5, 11),
    ("centos7", "centos", 7, 1),
    ("centosstream10", "centos", 10, 0),
    ("centosstream8", "centos", 8, 0),
    ("centosstream9", "centos", 9, 0),
    ("cloudlinux5", "cloudlinux", 5, 11),
    ("cloudlinux6", "cloudlinux", 6, 8),
    ("cloudlinux7", "cloudlinux", 7, 3),
    ("coreos", "coreos", 899, 15),
    ("debian10", "debian", 10, 11),
    ("debian13", "debian", 13, 1),
    ("debian8", "debian", 8, 2),
    ("debiantesting", "debian", 12, 0),
    ("exherbo", "unknown", 0, 0),
    ("fedora19", "fedora", 19, 0),
    ("fedora23", "fedora", 23, 0),
    ("fedora30", "fedora", 30, 0),
    ("fedora42", "fedora", 42, 0),
    ("gentoo", "gentoo", 2, 2),
    ("guix", "unknown", 0, 0),
    ("kali", "kalilinux", 2017, 1),
    ("kvmibm1", "unknown", 1, 1),
    ("linuxmint17", "ubuntu", 14, 4),
    ("mageia5", "mageia", 5, 0),
    ("mandriva2011", "mandriva", 2011, 0),
    ("manjaro1512", "unknown", 0, 0),
    ("openelec6", "unknown", 6, 0),
    ("opensuse15", "opensuse", 15, 2),
    ("opensuse42", "opensuse", 42, 1),
    ("oracle7", "oraclelinux", 7, 5),
    ("raspbian7", "debian", 7, 1),
    ("raspbian8", "debian", 8, 0),
    ("rhel10", "rhel", 10, 0),
    ("rhel5", "rhel", 5, 11),
    ("rhel6", "rhel", 6, 5),
    ("rhel7", "rhel", 7, 0),
    ("rhel9", "rhel", 9, 6),
    ("rocky", "rocky", 8, 4),
    ("rocky10", "rocky", 10, 0),
    ("rocky9", "rocky", 9, 3),
    ("scientific6", "scientificlinux", 6, 4),
    ("scientific7", "scientificlinux", 7, 2),
    ("slackware14", "slackware", 14, 1),
    ("sles12", "sles", 12, 1),
    ("ubuntu14", "ubuntu", 14, 4),
    ("ubuntu16", "ubuntu", 16, 4),
    ("ubuntu24", "ubuntu", 24, 4),
    ("ubuntu2504", "ubuntu", 25, 4),
    ("ubuntu2510", "ubuntu", 25, 10),
    ("ubuntu2604", "ubuntu", 26, 4),
];

/// Non-Linux or empty samples: no distro expected.
const NOT_LINUX: &[&str] = &[
    "__shared__",
    "aix72",
    "freebsd111",
    "midnightbsd12",
    "netbsd711",
    "openbsd62",
];

/// Samples whose name does not carry the version the way `name_version`
/// reads it (build numbers, product versions unlike the distro's).
const NAME_EXCEPTIONS: &[&str] = &[
    "gentoo_214",
    "gentoo_218",
    "clearlinux_1",
    "coreos",
    "amazon_2018",
    "photon_1",
    "bottlerocket",
    "raspbian_10",
    "raspbian_11",
    "raspbian_8",
    "kali",
    "gentoo",
    "rocky",
    "linuxmint17",
    "armbian",
    "bttcb1",
    "kvmibm1",
    "openwrt_2203",
    "manjaro1512",
    "openelec6",
    "debiantesting",
    "nixos",
    "mageia5",
    "mandriva2011",
];

/// (major, minor) from a sample name: `rocky_8` → (8, None),
/// `ubuntu_2204`/`ubuntu2504` → (22, Some(4)), `kali_2018_4` → (2018, Some(4)),
/// `centos7` → (7, None).
fn name_version(name: &str, distro: &str) -> Option<(u32, Option<u32>)> {
    let nums: Vec<&str> = if name.contains('_') {
        name.split('_')
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .collect()
    } else {
        let start = name.find(|c: char| c.is_ascii_digit())?;
        vec![&name[start..]]
    };
    let first = nums.first()?;
    if distro == "ubuntu" && first.len() == 4 {
        return Some((first[..2].parse().ok()?, Some(first[2..].parse().ok()?)));
    }
    Some((
        first.parse().ok()?,
        nums.get(1).and_then(|m| m.parse().ok()),
    ))
}

fn check(name: &str, fs: &MemFs, distro: &str, major: u32, minor: u32, failures: &mut Vec<String>) {
    let d = inspect_distro(fs, &InspectOptions::default());
    if (d.distro.as_str(), d.major_version, d.minor_version) != (distro, major, minor) {
        failures.push(format!(
            "{name}: got {} {}.{}, want {distro} {major}.{minor}",
            d.distro, d.major_version, d.minor_version
        ));
    }
    if !NAME_EXCEPTIONS.contains(&name) {
        if let Some((maj, min)) = name_version(name, distro) {
            if maj != major || min.is_some_and(|m| m != minor) {
                failures.push(format!(
                    "{name}: table says {major}.{minor}, name says {maj}.{min:?}"
                ));
            }
        }
    }
}

fn sample_names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".md") && n != "LICENSE")
        .collect();
    v.sort();
    v
}

#[test]
fn chef_os_release_golden() {
    let dir = realdata("chef-os_release");
    require(&dir);
    let names = sample_names(&dir);
    // Every sample is in the table, and vice versa.
    let listed: Vec<&str> = CHEF.iter().map(|r| r.0).collect();
    for n in &names {
        assert!(
            listed.contains(&n.as_str()),
            "chef sample {n} not in the table"
        );
    }
    assert_eq!(names.len(), CHEF.len());
    let mut failures = Vec::new();
    for (name, distro, major, minor) in CHEF {
        let fs =
            MemFs::new(*name).with_file("/etc/os-release", &std::fs::read(dir.join(name)).unwrap());
        check(name, &fs, distro, *major, *minor, &mut failures);
    }
    let known = CHEF.iter().filter(|r| r.1 != "unknown").count();
    println!(
        "chef-os_release: {} samples, {known} identified",
        CHEF.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn python_distro_golden() {
    let dir = realdata("python-distro/tests/resources/distros");
    require(&dir);
    let names = sample_names(&dir);
    let listed: Vec<&str> = PYTHON_DISTRO.iter().map(|r| r.0).collect();
    for n in &names {
        assert!(
            listed.contains(&n.as_str()) || NOT_LINUX.contains(&n.as_str()),
            "python-distro sample {n} not in the table"
        );
    }
    let mut failures = Vec::new();
    for (name, distro, major, minor) in PYTHON_DISTRO {
        let fs = memfs_from(&dir.join(name));
        check(name, &fs, distro, *major, *minor, &mut failures);
    }
    for name in NOT_LINUX {
        let fs = memfs_from(&dir.join(name));
        let d = inspect_distro(&fs, &InspectOptions::default());
        assert_eq!(d.distro, "unknown", "{name}");
    }
    let known = PYTHON_DISTRO.iter().filter(|r| r.1 != "unknown").count();
    println!(
        "python-distro: {} samples, {known} identified",
        PYTHON_DISTRO.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn python_distro_extra_samples() {
    let base = realdata("python-distro/tests/resources");
    require(&base);
    let mut failures = Vec::new();
    for (rel, distro, major, minor) in [
        ("cli/fedora30", "fedora", 30, 0),
        ("testdistros/lsb/debian13_noosrelease", "debian", 13, 0),
        ("testdistros/distro/usrlibosreleaseonly", "unknown", 0, 0),
        ("testdistros/distro/unknowndistro", "unknown", 0, 0),
    ] {
        let fs = memfs_from(&base.join(rel));
        let d = inspect_distro(&fs, &InspectOptions::default());
        if (d.distro.as_str(), d.major_version, d.minor_version) != (distro, major, minor) {
            failures.push(format!(
                "{rel}: got {} {}.{}, want {distro} {major}.{minor}",
                d.distro, d.major_version, d.minor_version
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let fs = memfs_from(&base.join("testdistros/distro/usrlibosreleaseonly"));
    let d = inspect_distro(&fs, &InspectOptions::default());
    assert_eq!(d.product_name.as_deref(), Some("/usr/lib/os-release only"));
    assert_eq!(d.os_release_id.as_deref(), Some("usrlibosreleaseonly"));
    assert_eq!(d.release_files, vec!["/usr/lib/os-release"]);
}
