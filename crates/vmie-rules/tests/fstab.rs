//! The fstab action on hand-made cases and on util-linux's and augeas's real
//! fstab samples.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use vmie_rules::fstab::{fix, Volume, DISABLED_PREFIX};

fn realdata(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/realdata")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn vmware_guest() -> Vec<Volume> {
    vec![
        Volume {
            disk: 0,
            partition: Some(1),
            uuid: Some("de0a0001-0000-4000-8000-000000000001".into()),
            label: Some("rootfs".into()),
            partuuid: Some("5eed0001-01".into()),
            ..Volume::default()
        },
        Volume {
            disk: 0,
            partition: Some(5),
            uuid: Some("de0a0005-0000-4000-8000-000000000005".into()),
            label: Some("swap".into()),
            partuuid: Some("5eed0001-05".into()),
            ..Volume::default()
        },
    ]
}

const VMWARE_FSTAB: &str = "\
# /etc/fstab: static file system information.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
/dev/sda1       /               ext4    errors=remount-ro 0       1
/dev/sda5       none            swap    sw              0       0
/dev/sdb1       /data           ext4    defaults        0       2
/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto 0       0
fileserver:/export /mnt/share   nfs     defaults        0       0
.host:/         /mnt/hgfs       fuse.vmhgfs-fuse allow_other 0 0
tmpfs           /tmp            tmpfs   defaults        0       0
";

#[test]
fn vmware_fstab_becomes_cloud_ready() {
    let out = fix(VMWARE_FSTAB, &vmware_guest());
    let want = "\
# /etc/fstab: static file system information.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
UUID=de0a0001-0000-4000-8000-000000000001       /               ext4    errors=remount-ro 0       1
UUID=de0a0005-0000-4000-8000-000000000005       none            swap    sw              0       0
/dev/sdb1       /data           ext4    defaults,nofail        0       2
/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto 0       0
#vmie-fixup: fileserver:/export /mnt/share   nfs     defaults        0       0
#vmie-fixup: .host:/         /mnt/hgfs       fuse.vmhgfs-fuse allow_other 0 0
tmpfs           /tmp            tmpfs   defaults        0       0
";
    assert_eq!(out.text, want);
    // /dev/sr0 is left alone: not a disk the cloud renames, and noauto already.
    assert_eq!(out.changes.len(), 5);
    assert!(out.changes.iter().all(|c| !c.reason.is_empty()));
    assert_eq!(
        out.text.lines().count(),
        VMWARE_FSTAB.lines().count(),
        "never a line added"
    );
    // Idempotent.
    let again = fix(&out.text, &vmware_guest());
    assert_eq!(again.text, out.text);
    assert!(again.changes.is_empty());
}

#[test]
fn root_matching_nothing_is_noted_not_nofailed() {
    let out = fix("/dev/sdc1 / ext4 defaults 0 1\n", &vmware_guest());
    assert!(out.changes.is_empty());
    assert_eq!(out.notes.len(), 1);
}

#[test]
fn short_entries_get_an_options_field_for_nofail() {
    let out = fix("/dev/sdb1 /data ext4\n/dev/sdb2 /x\n", &vmware_guest());
    assert_eq!(
        out.text,
        "/dev/sdb1 /data ext4 defaults,nofail\n/dev/sdb2 /x auto defaults,nofail\n"
    );
}

#[test]
fn crlf_and_missing_final_newline_are_kept() {
    let out = fix(
        "/dev/sda1 / ext4 defaults 0 1\r\n/dev/sdb1 /d ext4 defaults 0 2",
        &vmware_guest(),
    );
    assert_eq!(
        out.text,
        "UUID=de0a0001-0000-4000-8000-000000000001 / ext4 defaults 0 1\r\n/dev/sdb1 /d ext4 defaults,nofail 0 2"
    );
}

#[test]
fn util_linux_samples() {
    // A RHEL-like fstab by UUID: the UUIDs match no volume here, so every
    // non-root block device gets nofail; pseudo filesystems are untouched;
    // nfs and cifs are disabled.
    let text = realdata("util-linux/tests/ts/libmount/files/fstab");
    let out = fix(&text, &[]);
    assert_eq!(out.text.lines().count(), text.lines().count());
    let lines: Vec<&str> = out.text.lines().collect();
    assert!(
        lines[0].starts_with("UUID=d3a8f783") && !lines[0].contains("nofail"),
        "root keeps its line: {}",
        lines[0]
    );
    assert!(lines[1].contains("noatime,defaults,nofail"), "{}", lines[1]);
    assert!(lines[3].starts_with("tmpfs") && !lines[3].contains("nofail"));
    assert!(
        lines[8].starts_with("/dev/mapper/foo") && !lines[8].contains("nofail"),
        "LVM names are stable"
    );
    assert!(lines[10].starts_with(DISABLED_PREFIX) && lines[10].contains("nfs"));
    assert!(lines[11].starts_with(DISABLED_PREFIX) && lines[11].contains("cifs"));
    assert_eq!(
        out.notes.len(),
        1,
        "root matches no volume: {:?}",
        out.notes
    );

    // The broken sample: the bad lines are disabled, the rest handled.
    let text = realdata("util-linux/tests/ts/libmount/files/fstab.broken");
    let out = fix(&text, &[]);
    let lines: Vec<&str> = out.text.lines().collect();
    assert_eq!(lines[0], format!("{DISABLED_PREFIX}bug"));
    assert!(
        lines[7].starts_with(DISABLED_PREFIX) && lines[7].contains("unexpected number of fields")
    );
    assert!(lines[3].starts_with(' '), "leading whitespace kept");
    let again = fix(&out.text, &[]);
    assert!(again.changes.is_empty(), "{:?}", again.changes);

    for f in ["fstab.comment", "fstab_btrfs"] {
        let text = realdata(&format!("util-linux/tests/ts/libmount/files/{f}"));
        let out = fix(&text, &[]);
        assert_eq!(out.text.lines().count(), text.lines().count(), "{f}");
        assert!(fix(&out.text, &[]).changes.is_empty(), "{f} not idempotent");
    }
}

#[test]
fn augeas_fedora_fstab_with_lvm_is_left_alone() {
    let text = realdata("augeas-root/tests/root/etc/fstab");
    let vols = vec![Volume {
        disk: 0,
        partition: Some(1),
        label: Some("/boot".into()),
        uuid: Some("b007".into()),
        ..Volume::default()
    }];
    let out = fix(&text, &vols);
    assert_eq!(out.text, text, "{:?}", out.changes);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text: same number of lines, idempotent, untouched lines identical.
        #[test]
        fn never_adds_lines_and_is_idempotent(lines in proptest::collection::vec(
            prop_oneof![
                Just("/dev/sda1 / ext4 defaults 0 1".to_string()),
                Just("/dev/sdb3 /srv xfs".to_string()),
                Just("# comment".to_string()),
                Just("".to_string()),
                Just("server:/x /y nfs4 rw 0 0".to_string()),
                "[ -~\t]{0,60}",
            ], 0..20)) {
            let text = lines.join("\n");
            let out = fix(&text, &vmware_guest());
            prop_assert_eq!(out.text.lines().count(), text.lines().count());
            let again = fix(&out.text, &vmware_guest());
            prop_assert_eq!(&again.text, &out.text);
            for c in &out.changes {
                prop_assert_eq!(out.text.lines().nth(c.line - 1), Some(c.after.as_str()));
            }
            for (i, (a, b)) in text.lines().zip(out.text.lines()).enumerate() {
                if !out.changes.iter().any(|c| c.line == i + 1) {
                    prop_assert_eq!(a, b);
                }
            }
        }
    }
}
