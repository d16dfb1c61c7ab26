//! Several filesystems seen as one guest tree, as the guest's fstab mounts
//! them (`/`, `/boot`, `/boot/efi`, ...).

use crate::{DirEntry, FsError, GuestFs, GuestPath, Limits, Metadata, NewAttrs};

/// A mount table: each path is served by the filesystem mounted at its
/// longest mountpoint prefix. Symlink resolution (in [`crate::resolve`])
/// works across mounts because it only calls these primitives.
#[derive(Debug, Default)]
pub struct Mounts {
    /// (mountpoint, filesystem), any order.
    mounts: Vec<(GuestPath, Box<dyn GuestFs>)>,
}

impl Mounts {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mount `fs` at `at`. A later mount at the same point hides the earlier.
    pub fn mount(&mut self, at: GuestPath, fs: Box<dyn GuestFs>) {
        self.mounts.retain(|(p, _)| *p != at);
        self.mounts.push((at, fs));
    }

    /// The mountpoints, shortest first.
    pub fn mountpoints(&self) -> Vec<GuestPath> {
        let mut v: Vec<GuestPath> = self.mounts.iter().map(|(p, _)| p.clone()).collect();
        v.sort_by_key(|p| p.components().len());
        v
    }

    fn index(&self, path: &GuestPath) -> Option<usize> {
        self.mounts
            .iter()
            .enumerate()
            .filter(|(_, (m, _))| path.components().starts_with(m.components()))
            .max_by_key(|(_, (m, _))| m.components().len())
            .map(|(i, _)| i)
    }

    /// The filesystem serving `path` and the path inside it.
    fn route(&self, path: &GuestPath) -> Result<(&dyn GuestFs, GuestPath), FsError> {
        let i = self.index(path).ok_or_else(|| FsError::NotFound {
            fs: "guest".into(),
            path: path.to_string(),
        })?;
        let (m, fs) = &self.mounts[i];
        Ok((fs.as_ref(), inner(m, path)))
    }

    fn route_mut(&mut self, path: &GuestPath) -> Result<(&mut dyn GuestFs, GuestPath), FsError> {
        let i = self.index(path).ok_or_else(|| FsError::NotFound {
            fs: "guest".into(),
            path: path.to_string(),
        })?;
        let (m, fs) = &mut self.mounts[i];
        let p = inner(m, path);
        Ok((fs.as_mut(), p))
    }
}

fn inner(mountpoint: &GuestPath, path: &GuestPath) -> GuestPath {
    let mut p = GuestPath::root();
    for c in &path.components()[mountpoint.components().len()..] {
        p = p.join(c);
    }
    p
}

impl GuestFs for Mounts {
    fn kind(&self) -> &'static str {
        "mounts"
    }

    fn location(&self) -> String {
        "guest".into()
    }

    fn limits(&self) -> Limits {
        self.mounts
            .iter()
            .map(|(_, f)| f.limits())
            .next()
            .unwrap_or_default()
    }

    fn symlink_metadata(&self, path: &GuestPath) -> Result<Metadata, FsError> {
        let (fs, p) = self.route(path)?;
        fs.symlink_metadata(&p)
    }

    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>, FsError> {
        let (fs, p) = self.route(path)?;
        fs.read_dir(&p)
    }

    fn read_file(&self, path: &GuestPath, limit: u64) -> Result<Vec<u8>, FsError> {
        let (fs, p) = self.route(path)?;
        fs.read_file(&p, limit)
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>, FsError> {
        let (fs, p) = self.route(path)?;
        fs.read_link(&p)
    }

    fn replace_file(&mut self, path: &GuestPath, data: &[u8]) -> Result<(), FsError> {
        let (fs, p) = self.route_mut(path)?;
        fs.replace_file(&p, data)
    }

    fn create_file(
        &mut self,
        path: &GuestPath,
        data: &[u8],
        attrs: &NewAttrs,
    ) -> Result<(), FsError> {
        let (fs, p) = self.route_mut(path)?;
        fs.create_file(&p, data, attrs)
    }

    fn rename(&mut self, from: &GuestPath, to: &GuestPath) -> Result<(), FsError> {
        let i = self.index(from).ok_or_else(|| FsError::NotFound {
            fs: "guest".into(),
            path: from.to_string(),
        })?;
        if self.index(to) != Some(i) {
            return Err(FsError::Unsupported {
                fs: "guest".into(),
                op: format!("rename {from} to {to}"),
                why: "the two paths are on different filesystems".into(),
            });
        }
        let (m, fs) = &mut self.mounts[i];
        let (f, t) = (inner(m, from), inner(m, to));
        fs.rename(&f, &t)
    }

    fn remove(&mut self, path: &GuestPath) -> Result<(), FsError> {
        let (fs, p) = self.route_mut(path)?;
        fs.remove(&p)
    }

    fn mkdir(&mut self, path: &GuestPath, attrs: &NewAttrs) -> Result<(), FsError> {
        let (fs, p) = self.route_mut(path)?;
        fs.mkdir(&p, attrs)
    }

    fn symlink(
        &mut self,
        path: &GuestPath,
        target: &[u8],
        attrs: &NewAttrs,
    ) -> Result<(), FsError> {
        let (fs, p) = self.route_mut(path)?;
        fs.symlink(&p, target, attrs)
    }
}
