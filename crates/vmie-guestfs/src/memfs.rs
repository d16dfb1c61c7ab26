//! An in-memory filesystem implementing every primitive of [`GuestFs`],
//! reads and writes, for tests of the layers above the filesystems.

use std::collections::BTreeMap;

use crate::{
    DirEntry, FileType, FsError, GuestFs, GuestPath, Limits, Metadata, NewAttrs, Timestamp, Xattr,
};

#[derive(Debug, Clone)]
enum Body {
    File(Vec<u8>),
    Dir(BTreeMap<Vec<u8>, u64>),
    Link(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Node {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timestamp,
    xattrs: Vec<Xattr>,
    body: Body,
}

/// An in-memory filesystem. Inode 1 is the root directory.
#[derive(Debug, Clone)]
pub struct MemFs {
    name: String,
    nodes: BTreeMap<u64, Node>,
    next_ino: u64,
    limits: Limits,
    /// Logical clock for mtimes, so tests can see that writes touch them.
    clock: i64,
}

impl Default for MemFs {
    fn default() -> Self {
        Self::new("memfs")
    }
}

const ROOT: u64 = 1;

impl MemFs {
    /// An empty filesystem called `name` in messages.
    pub fn new(name: impl Into<String>) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            Node {
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: Timestamp::default(),
                xattrs: Vec::new(),
                body: Body::Dir(BTreeMap::new()),
            },
        );
        Self {
            name: name.into(),
            nodes,
            next_ino: 2,
            limits: Limits::default(),
            clock: 0,
        }
    }

    /// Replace the limits (e.g. a small symlink hop limit in a test).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Builder: a file at `path` (parents created), mode 0644.
    pub fn with_file(mut self, path: &str, data: &[u8]) -> Self {
        let p = GuestPath::from(path);
        self.mkdir_p(&p.parent());
        let _ = self.create_file(&p, data, &NewAttrs::default());
        self
    }

    /// Builder: a symlink at `path` (parents created).
    pub fn with_symlink(mut self, path: &str, target: &str) -> Self {
        let p = GuestPath::from(path);
        self.mkdir_p(&p.parent());
        let _ = self.symlink(&p, target.as_bytes(), &NewAttrs::default());
        self
    }

    /// Load a directory tree of the host (files, directories, symlinks, with
    /// their modes) into a new filesystem, for tests that use the fixture
    /// trees in `fixtures/trees/`. Other file types are skipped.
    pub fn from_host_dir(name: impl Into<String>, dir: &std::path::Path) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        fn walk(fs: &mut MemFs, host: &std::path::Path, guest: &GuestPath) -> std::io::Result<()> {
            let mut entries: Vec<_> = std::fs::read_dir(host)?.collect::<Result<_, _>>()?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name();
                let g = guest.join(name.as_encoded_bytes());
                let meta = std::fs::symlink_metadata(e.path())?;
                let mode = meta.permissions().mode() & 0o7777;
                let attrs = NewAttrs {
                    mode,
                    ..NewAttrs::default()
                };
                let ft = meta.file_type();
                if ft.is_symlink() {
                    let t = std::fs::read_link(e.path())?;
                    let _ = fs.symlink(&g, t.as_os_str().as_encoded_bytes(), &attrs);
                } else if ft.is_dir() {
                    let _ = fs.mkdir(&g, &attrs);
                    walk(fs, &e.path(), &g)?;
                } else if ft.is_file() {
                    let data = std::fs::read(e.path())?;
                    let _ = fs.create_file(&g, &data, &attrs);
                }
            }
            Ok(())
        }
        let mut fs = Self::new(name);
        walk(&mut fs, dir, &GuestPath::root())?;
        Ok(fs)
    }

    /// Builder: a directory at `path` (parents created).
    pub fn with_dir(mut self, path: &str) -> Self {
        self.mkdir_p(&GuestPath::from(path));
        self
    }

    fn mkdir_p(&mut self, p: &GuestPath) {
        let mut cur = GuestPath::root();
        for c in p.components() {
            cur = cur.join(c);
            let attrs = NewAttrs {
                mode: 0o755,
                ..NewAttrs::default()
            };
            let _ = self.mkdir(&cur, &attrs);
        }
    }

    fn not_found(&self, path: &GuestPath) -> FsError {
        FsError::NotFound {
            fs: self.name.clone(),
            path: path.to_string(),
        }
    }

    /// Inode of `path`; every component must be a directory but the last.
    fn ino(&self, path: &GuestPath) -> Result<u64, FsError> {
        let mut ino = ROOT;
        for (i, c) in path.components().iter().enumerate() {
            let node = self.nodes.get(&ino).ok_or_else(|| self.not_found(path))?;
            match &node.body {
                Body::Dir(entries) => ino = *entries.get(c).ok_or_else(|| self.not_found(path))?,
                _ => {
                    let mut prefix = GuestPath::root();
                    for c in &path.components()[..i] {
                        prefix = prefix.join(c);
                    }
                    return Err(FsError::NotADirectory {
                        fs: self.name.clone(),
                        path: prefix.to_string(),
                    });
                }
            }
        }
        Ok(ino)
    }

    fn dir_mut(&mut self, path: &GuestPath) -> Result<&mut BTreeMap<Vec<u8>, u64>, FsError> {
        let ino = self.ino(path)?;
        let name = self.name.clone();
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::Dir(d)) => Ok(d),
            _ => Err(FsError::NotADirectory {
                fs: name,
                path: path.to_string(),
            }),
        }
    }

    fn tick(&mut self) -> Timestamp {
        self.clock += 1;
        Timestamp {
            secs: self.clock,
            nanos: 0,
        }
    }

    fn add(&mut self, path: &GuestPath, attrs: &NewAttrs, body: Body) -> Result<(), FsError> {
        let name = path.file_name().ok_or_else(|| FsError::Exists {
            fs: self.name.clone(),
            path: "/".into(),
        })?;
        let fsname = self.name.clone();
        let ino = self.next_ino;
        let parent = self.dir_mut(&path.parent())?;
        if parent.contains_key(name) {
            return Err(FsError::Exists {
                fs: fsname,
                path: path.to_string(),
            });
        }
        parent.insert(name.to_vec(), ino);
        self.next_ino += 1;
        let mtime = self.tick();
        self.nodes.insert(
            ino,
            Node {
                mode: attrs.mode & 0o7777,
                uid: attrs.uid,
                gid: attrs.gid,
                mtime,
                xattrs: attrs.xattrs.clone(),
                body,
            },
        );
        Ok(())
    }

    /// Number of hard links to `ino` (directories count their entries).
    fn nlink(&self, ino: u64) -> u64 {
        self.nodes
            .values()
            .filter_map(|n| match &n.body {
                Body::Dir(d) => Some(d.values().filter(|&&i| i == ino).count() as u64),
                _ => None,
            })
            .sum::<u64>()
            .max(1)
    }
}

impl GuestFs for MemFs {
    fn kind(&self) -> &'static str {
        "memfs"
    }

    fn location(&self) -> String {
        self.name.clone()
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn symlink_metadata(&self, path: &GuestPath) -> Result<Metadata, FsError> {
        let ino = self.ino(path)?;
        let n = self.nodes.get(&ino).ok_or_else(|| self.not_found(path))?;
        let (file_type, size) = match &n.body {
            Body::File(d) => (FileType::Regular, d.len() as u64),
            Body::Dir(d) => (FileType::Directory, d.len() as u64),
            Body::Link(t) => (FileType::Symlink, t.len() as u64),
        };
        Ok(Metadata {
            file_type,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            size,
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            inode: Some(ino),
            nlink: Some(self.nlink(ino)),
            xattrs: Some(n.xattrs.clone()),
        })
    }

    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>, FsError> {
        let ino = self.ino(path)?;
        match self.nodes.get(&ino).map(|n| &n.body) {
            Some(Body::Dir(d)) => Ok(d
                .iter()
                .map(|(name, i)| DirEntry {
                    name: name.clone(),
                    file_type: match self.nodes.get(i).map(|n| &n.body) {
                        Some(Body::File(_)) => FileType::Regular,
                        Some(Body::Dir(_)) => FileType::Directory,
                        Some(Body::Link(_)) => FileType::Symlink,
                        None => FileType::Unknown,
                    },
                })
                .collect()),
            _ => Err(FsError::NotADirectory {
                fs: self.name.clone(),
                path: path.to_string(),
            }),
        }
    }

    fn read_file(&self, path: &GuestPath, limit: u64) -> Result<Vec<u8>, FsError> {
        let ino = self.ino(path)?;
        match self.nodes.get(&ino).map(|n| &n.body) {
            Some(Body::File(d)) if d.len() as u64 > limit => Err(FsError::TooLarge {
                fs: self.name.clone(),
                path: path.to_string(),
                size: d.len() as u64,
                limit,
            }),
            Some(Body::File(d)) => Ok(d.clone()),
            Some(Body::Dir(_)) => Err(FsError::IsADirectory {
                fs: self.name.clone(),
                path: path.to_string(),
            }),
            _ => Err(FsError::NotAFile {
                fs: self.name.clone(),
                path: path.to_string(),
            }),
        }
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>, FsError> {
        let ino = self.ino(path)?;
        match self.nodes.get(&ino).map(|n| &n.body) {
            Some(Body::Link(t)) => Ok(t.clone()),
            _ => Err(FsError::NotASymlink {
                fs: self.name.clone(),
                path: path.to_string(),
            }),
        }
    }

    fn replace_file(&mut self, path: &GuestPath, data: &[u8]) -> Result<(), FsError> {
        let ino = self.ino(path)?;
        let now = self.tick();
        let name = self.name.clone();
        match self.nodes.get_mut(&ino) {
            Some(Node {
                body: Body::File(d),
                mtime,
                ..
            }) => {
                *d = data.to_vec();
                *mtime = now;
                Ok(())
            }
            _ => Err(FsError::NotAFile {
                fs: name,
                path: path.to_string(),
            }),
        }
    }

    fn create_file(
        &mut self,
        path: &GuestPath,
        data: &[u8],
        attrs: &NewAttrs,
    ) -> Result<(), FsError> {
        self.add(path, attrs, Body::File(data.to_vec()))
    }

    fn mkdir(&mut self, path: &GuestPath, attrs: &NewAttrs) -> Result<(), FsError> {
        self.add(path, attrs, Body::Dir(BTreeMap::new()))
    }

    fn symlink(
        &mut self,
        path: &GuestPath,
        target: &[u8],
        attrs: &NewAttrs,
    ) -> Result<(), FsError> {
        let attrs = NewAttrs {
            mode: 0o777,
            ..attrs.clone()
        };
        self.add(path, &attrs, Body::Link(target.to_vec()))
    }

    fn rename(&mut self, from: &GuestPath, to: &GuestPath) -> Result<(), FsError> {
        let ino = self.ino(from)?;
        if ino == ROOT || to.components().starts_with(from.components()) && to != from {
            return Err(FsError::Unsupported {
                fs: self.name.clone(),
                op: format!("rename {from} to {to}"),
                why: "cannot move a directory into itself".into(),
            });
        }
        let (Some(from_name), Some(to_name)) = (from.file_name(), to.file_name()) else {
            return Err(self.not_found(from));
        };
        // Check the target first so a failure changes nothing.
        let target_dir_ino = self.ino(&to.parent())?;
        if let Some(Node {
            body: Body::Dir(d), ..
        }) = self.nodes.get(&target_dir_ino)
        {
            if let Some(existing) = d.get(to_name) {
                if matches!(
                    self.nodes.get(existing).map(|n| &n.body),
                    Some(Body::Dir(_))
                ) {
                    return Err(FsError::IsADirectory {
                        fs: self.name.clone(),
                        path: to.to_string(),
                    });
                }
            }
        } else {
            return Err(FsError::NotADirectory {
                fs: self.name.clone(),
                path: to.parent().to_string(),
            });
        }
        if from == to {
            return Ok(());
        }
        self.dir_mut(&from.parent())?.remove(from_name);
        let replaced = self.dir_mut(&to.parent())?.insert(to_name.to_vec(), ino);
        if let Some(old) = replaced {
            if self.nlink_is_zero(old) {
                self.nodes.remove(&old);
            }
        }
        Ok(())
    }

    fn remove(&mut self, path: &GuestPath) -> Result<(), FsError> {
        let ino = self.ino(path)?;
        if let Some(Node {
            body: Body::Dir(d), ..
        }) = self.nodes.get(&ino)
        {
            if ino == ROOT || !d.is_empty() {
                return Err(FsError::NotEmpty {
                    fs: self.name.clone(),
                    path: path.to_string(),
                });
            }
        }
        let name = path
            .file_name()
            .ok_or_else(|| self.not_found(path))?
            .to_vec();
        self.dir_mut(&path.parent())?.remove(&name);
        if self.nlink_is_zero(ino) {
            self.nodes.remove(&ino);
        }
        Ok(())
    }
}

impl MemFs {
    fn nlink_is_zero(&self, ino: u64) -> bool {
        !self
            .nodes
            .values()
            .any(|n| matches!(&n.body, Body::Dir(d) if d.values().any(|&i| i == ino)))
    }
}
