//! Paths inside the guest.

use std::fmt;

/// A normalised absolute path inside the guest: a list of components, none
/// empty, `.` or `..`, and none containing `/` or NUL. Names are bytes, as on
/// Linux filesystems.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GuestPath {
    components: Vec<Vec<u8>>,
}

impl GuestPath {
    /// The root directory.
    pub fn root() -> Self {
        Self::default()
    }

    /// Normalise `path` lexically: relative paths are taken from the root, `.`
    /// and empty components vanish, `..` removes the previous component and
    /// stays at the root when there is none. Symlinks are not followed here;
    /// see [`crate::resolve`] for that.
    pub fn lexical(path: &[u8]) -> Self {
        let mut p = Self::root();
        for c in path.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    p.components.pop();
                }
                name => p
                    .components
                    .push(name.iter().copied().filter(|&b| b != 0).collect()),
            }
        }
        p
    }

    /// The components, root first.
    pub fn components(&self) -> &[Vec<u8>] {
        &self.components
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// This path with `name` appended. `name` must be a plain component.
    pub fn join(&self, name: &[u8]) -> Self {
        let mut p = self.clone();
        p.components.push(name.to_vec());
        p
    }

    /// The parent directory (the root's parent is the root).
    pub fn parent(&self) -> Self {
        let mut p = self.clone();
        p.components.pop();
        p
    }

    /// The last component, if any.
    pub fn file_name(&self) -> Option<&[u8]> {
        self.components.last().map(Vec::as_slice)
    }

    /// The path as bytes, `/a/b`.
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.components.is_empty() {
            return b"/".to_vec();
        }
        let mut out = Vec::new();
        for c in &self.components {
            out.push(b'/');
            out.extend_from_slice(c);
        }
        out
    }

    /// Pop the last component in place.
    pub(crate) fn pop(&mut self) {
        self.components.pop();
    }
}

impl fmt::Display for GuestPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

impl fmt::Debug for GuestPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestPath({self})")
    }
}

impl From<&str> for GuestPath {
    fn from(s: &str) -> Self {
        Self::lexical(s.as_bytes())
    }
}
