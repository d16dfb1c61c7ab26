//! Small lookup tables: .NET Framework 4 releases and Windows LCIDs.

/// Minimum `Release` DWORD of `HKLM\SOFTWARE\Microsoft\NET Framework
/// Setup\NDP\v4\Full` for each .NET Framework 4.5+ version (Microsoft's
/// "Determine which .NET Framework versions are installed" table; the
/// smallest value of each row, since later OS builds only add to it).
pub const DOTNET4_RELEASES: &[(u32, &str)] = &[
    (378389, "4.5"),
    (378675, "4.5.1"),
    (379893, "4.5.2"),
    (393295, "4.6"),
    (394254, "4.6.1"),
    (394802, "4.6.2"),
    (460798, "4.7"),
    (461308, "4.7.1"),
    (461808, "4.7.2"),
    (528040, "4.8"),
    (533320, "4.8.1"),
];

/// The .NET Framework version of a v4 `Release` value: the newest version
/// whose minimum release it reaches, as Microsoft recommends (`>=` rather
/// than equality, so future builds map to the newest known version).
/// `None` below 4.5 (378389).
pub fn dotnet4_version(release: u32) -> Option<&'static str> {
    DOTNET4_RELEASES
        .iter()
        .rev()
        .find(|(min, _)| release >= *min)
        .map(|(_, v)| *v)
}

/// A small table of Windows language IDs → BCP 47 tags.
const LCIDS: &[(u16, &str)] = &[
    (0x0401, "ar-SA"),
    (0x0404, "zh-TW"),
    (0x0405, "cs-CZ"),
    (0x0406, "da-DK"),
    (0x0407, "de-DE"),
    (0x0408, "el-GR"),
    (0x0409, "en-US"),
    (0x040a, "es-ES_tradnl"),
    (0x040b, "fi-FI"),
    (0x040c, "fr-FR"),
    (0x040d, "he-IL"),
    (0x040e, "hu-HU"),
    (0x0410, "it-IT"),
    (0x0411, "ja-JP"),
    (0x0412, "ko-KR"),
    (0x0413, "nl-NL"),
    (0x0414, "nb-NO"),
    (0x0415, "pl-PL"),
    (0x0416, "pt-BR"),
    (0x0418, "ro-RO"),
    (0x0419, "ru-RU"),
    (0x041d, "sv-SE"),
    (0x041e, "th-TH"),
    (0x041f, "tr-TR"),
    (0x0422, "uk-UA"),
    (0x0804, "zh-CN"),
    (0x0807, "de-CH"),
    (0x0809, "en-GB"),
    (0x080a, "es-MX"),
    (0x0816, "pt-PT"),
    (0x0c04, "zh-HK"),
    (0x0c07, "de-AT"),
    (0x0c09, "en-AU"),
    (0x0c0a, "es-ES"),
    (0x0c0c, "fr-CA"),
    (0x1009, "en-CA"),
    (0x100c, "fr-CH"),
    (0x1409, "en-NZ"),
    (0x1809, "en-IE"),
    (0x4009, "en-IN"),
];

/// The language tag of a hex LCID string as the registry stores it
/// (`"0409"` → `en-US`). `None` for malformed or unlisted IDs.
pub fn lcid_tag(lcid: &str) -> Option<&'static str> {
    let t = lcid.trim();
    if t.is_empty() || t.len() > 8 {
        return None;
    }
    let n = u32::from_str_radix(t, 16).ok()?;
    let n = u16::try_from(n).ok()?;
    LCIDS.iter().find(|(id, _)| *id == n).map(|(_, tag)| *tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotnet_table() {
        assert_eq!(dotnet4_version(378388), None);
        assert_eq!(dotnet4_version(378389), Some("4.5"));
        assert_eq!(dotnet4_version(378758), Some("4.5.1"));
        assert_eq!(dotnet4_version(461814), Some("4.7.2"));
        assert_eq!(dotnet4_version(528040), Some("4.8"));
        assert_eq!(dotnet4_version(528449), Some("4.8"));
        assert_eq!(dotnet4_version(533320), Some("4.8.1"));
        assert_eq!(dotnet4_version(u32::MAX), Some("4.8.1"));
        for (rel, v) in DOTNET4_RELEASES {
            assert_eq!(dotnet4_version(*rel), Some(*v));
        }
    }

    #[test]
    fn lcids() {
        assert_eq!(lcid_tag("0409"), Some("en-US"));
        assert_eq!(lcid_tag("0407"), Some("de-DE"));
        assert_eq!(lcid_tag("0C0A"), Some("es-ES"));
        assert_eq!(lcid_tag(""), None);
        assert_eq!(lcid_tag("zz"), None);
        assert_eq!(lcid_tag("123456789"), None);
        assert_eq!(lcid_tag("10409"), None);
        assert_eq!(lcid_tag("7fff"), None);
    }
}
