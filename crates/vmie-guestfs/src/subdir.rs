//! A directory of a filesystem seen as a root of its own: an OSTree
//! deployment (`/ostree/deploy/OS/deploy/CHECKSUM.N`) is the guest's `/`,
//! with its absolute symlinks resolved inside it, as the booted system sees
//! them.

use crate::{DirEntry, FsError, GuestFs, GuestPath, Limits, Metadata, NewAttrs};

/// The directory `base` of `inner`, as a filesystem whose root it is.
#[derive(Debug)]
pub struct SubdirFs<'a> {
    inner: Box<dyn GuestFs + 'a>,
    base: GuestPath,
}

impl<'a> SubdirFs<'a> {
    /// View `base` (a directory of `inner`, no symlink in it) as a root.
    pub fn new(inner: Box<dyn GuestFs + 'a>, base: GuestPath) -> Self {
        Self { inner, base }
    }

    /// The directory this view starts at, in the inner filesystem.
    pub fn base(&self) -> &GuestPath {
        &self.base
    }

    fn at(&self, path: &GuestPath) -> GuestPath {
        let mut p = self.base.clone();
        for c in path.components() {
            p = p.join(c);
        }
        p
    }
}

impl GuestFs for SubdirFs<'_> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn location(&self) -> String {
        format!("{} at {}", self.inner.location(), self.base)
    }

    fn limits(&self) -> Limits {
        self.inner.limits()
    }

    fn symlink_metadata(&self, path: &GuestPath) -> Result<Metadata, FsError> {
        self.inner.symlink_metadata(&self.at(path))
    }

    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>, FsError> {
        self.inner.read_dir(&self.at(path))
    }

    fn read_file(&self, path: &GuestPath, limit: u64) -> Result<Vec<u8>, FsError> {
        self.inner.read_file(&self.at(path), limit)
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>, FsError> {
        self.inner.read_link(&self.at(path))
    }

    fn replace_file(&mut self, path: &GuestPath, data: &[u8]) -> Result<(), FsError> {
        let p = self.at(path);
        self.inner.replace_file(&p, data)
    }

    fn create_file(
        &mut self,
        path: &GuestPath,
        data: &[u8],
        attrs: &NewAttrs,
    ) -> Result<(), FsError> {
        let p = self.at(path);
        self.inner.create_file(&p, data, attrs)
    }

    fn rename(&mut self, from: &GuestPath, to: &GuestPath) -> Result<(), FsError> {
        let (f, t) = (self.at(from), self.at(to));
        self.inner.rename(&f, &t)
    }

    fn remove(&mut self, path: &GuestPath) -> Result<(), FsError> {
        let p = self.at(path);
        self.inner.remove(&p)
    }

    fn mkdir(&mut self, path: &GuestPath, attrs: &NewAttrs) -> Result<(), FsError> {
        let p = self.at(path);
        self.inner.mkdir(&p, attrs)
    }

    fn symlink(
        &mut self,
        path: &GuestPath,
        target: &[u8],
        attrs: &NewAttrs,
    ) -> Result<(), FsError> {
        let p = self.at(path);
        self.inner.symlink(&p, target, attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GuestFsExt, MemFs};

    #[test]
    fn paths_and_absolute_symlinks_stay_inside() {
        let fs = MemFs::new("sysroot")
            .with_file("/etc/os-release", b"ID=outside\n")
            .with_file("/d/etc/real", b"ID=inside\n")
            .with_symlink("/d/etc/os-release", "/etc/real");
        let v = SubdirFs::new(Box::new(fs), GuestPath::from("/d"));
        assert_eq!(v.read("/etc/os-release").unwrap(), b"ID=inside\n");
        assert!(v.exists("/etc/real").unwrap());
        assert!(!v.exists("/d").unwrap());
        assert!(v.location().ends_with("at /d"), "{}", v.location());
    }
}
