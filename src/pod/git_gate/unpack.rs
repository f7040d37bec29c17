//! Opens the archives and compressed files a push carries, so that every file inside is
//! scanned like any other blob. Left to gitleaks, archives lose what its skip list names
//! (`node_modules/`, lock files, images), binary members and compressed files inside
//! compressed files. Bounded in depth, inflated bytes and member count; what cannot be opened
//! is reported, never passed over.

use std::io::{Read, Write};

/// How many archives or compressed files may sit inside one another.
pub const MAX_DEPTH: u32 = 4;
/// Most bytes one pushed file may unpack to, all levels together.
pub const MAX_INFLATED: u64 = 128 << 20;
/// Most files one pushed file may hold, all levels together.
pub const MAX_MEMBERS: usize = 20_000;

/// A container format, told by its first bytes (never by its name, which the pusher picks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// gzip (also `.tgz`).
    Gzip,
    /// bzip2.
    Bzip2,
    /// xz.
    Xz,
    /// zstd.
    Zstd,
    /// POSIX tar.
    Tar,
    /// zip (also jar, docx, apk ...).
    Zip,
    /// 7-Zip: no decoder here.
    SevenZip,
    /// RAR: no decoder here.
    Rar,
}

/// The container `content` is, if any.
pub fn container_of(content: &[u8]) -> Option<Container> {
    Some(match content {
        [0x1f, 0x8b, ..] => Container::Gzip,
        [b'B', b'Z', b'h', ..] => Container::Bzip2,
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Container::Xz,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Container::Zstd,
        [b'P', b'K', 3, 4, ..] | [b'P', b'K', 5, 6, ..] => Container::Zip,
        [b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c, ..] => Container::SevenZip,
        [b'R', b'a', b'r', b'!', 0x1a, 0x07, ..] => Container::Rar,
        _ if content.get(257..262) == Some(b"ustar") => Container::Tar,
        _ => return None,
    })
}

/// Why a pushed file could not be scanned to the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unscannable {
    /// Containers nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// It unpacks to more than [`MAX_INFLATED`] bytes.
    TooLarge,
    /// It holds more than [`MAX_MEMBERS`] files.
    TooMany,
    /// A container that cannot be read (format, encryption, corruption): why.
    Unreadable(String),
}

/// Where inside the pushed file scanning stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path inside (`a.tar!b.zip!c`; empty for the pushed file itself).
    pub inner: String,
    /// Why.
    pub why: Unscannable,
}

/// Calls `file(inner_path, content)` for every file inside the container `content` (pushed
/// as `name`), at every level, depth first. Inner paths join levels with `!`. Stops at the
/// first [`Problem`]; an error is only ever `file`'s own.
pub fn unpack(
    content: &[u8],
    name: &str,
    file: &mut dyn FnMut(&str, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<Result<(), Problem>> {
    unpack_within(content, name, MAX_INFLATED, file)
}

fn unpack_within(
    content: &[u8],
    name: &str,
    budget: u64,
    file: &mut dyn FnMut(&str, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<Result<(), Problem>> {
    let mut w = Walker {
        name: name.rsplit('/').next().unwrap_or(name),
        budget,
        members: 0,
        file,
    };
    w.walk(content, "", 0)
}

struct Walker<'a> {
    name: &'a str,
    budget: u64,
    members: usize,
    file: &'a mut dyn FnMut(&str, &[u8]) -> anyhow::Result<()>,
}

type Step = anyhow::Result<Result<(), Problem>>;

fn problem(inner: &str, why: Unscannable) -> Step {
    Ok(Err(Problem {
        inner: inner.to_string(),
        why,
    }))
}

impl Walker<'_> {
    fn walk(&mut self, data: &[u8], path: &str, depth: u32) -> Step {
        let Some(c) = container_of(data) else {
            if path.is_empty() {
                // Not a container after all: the caller scans it as a file.
                return problem(path, Unscannable::Unreadable("not an archive".into()));
            }
            self.members += 1;
            if self.members > MAX_MEMBERS {
                return problem(path, Unscannable::TooMany);
            }
            (self.file)(path, data)?;
            return Ok(Ok(()));
        };
        if depth >= MAX_DEPTH {
            return problem(path, Unscannable::TooDeep);
        }
        match c {
            Container::Gzip | Container::Bzip2 | Container::Xz | Container::Zstd => {
                let inflated = match self.inflate(c, data) {
                    Ok(v) => v,
                    Err(why) => return problem(path, why),
                };
                // A compressed tar is one level, as people think of a `.tar.gz`.
                if container_of(&inflated) == Some(Container::Tar) {
                    self.tar(&inflated, path, depth)
                } else {
                    let inner = self.decompressed_name(path);
                    self.walk(&inflated, &inner, depth + 1)
                }
            }
            Container::Tar => self.tar(data, path, depth),
            Container::Zip => self.zip(data, path, depth),
            Container::SevenZip => problem(
                path,
                Unscannable::Unreadable("7-Zip archives cannot be opened".into()),
            ),
            Container::Rar => problem(
                path,
                Unscannable::Unreadable("RAR archives cannot be opened".into()),
            ),
        }
    }

    /// The name of what a compressed file holds: its name without the compression suffix.
    fn decompressed_name(&self, path: &str) -> String {
        let last = match path.rsplit_once('!') {
            Some((_, l)) => l,
            None if path.is_empty() => self.name,
            None => path,
        };
        let lower = last.to_ascii_lowercase();
        let stem = [".gz", ".bz2", ".xz", ".zst", ".z"]
            .iter()
            .find(|s| lower.ends_with(*s) && lower.len() > s.len())
            .map(|s| last[..last.len() - s.len()].to_string())
            .unwrap_or_else(|| format!("{last} (decompressed)"));
        join(path, &stem)
    }

    fn inflate(&mut self, c: Container, data: &[u8]) -> Result<Vec<u8>, Unscannable> {
        let mut out = Capped {
            buf: Vec::new(),
            left: self.budget,
        };
        let res = match c {
            Container::Gzip => {
                std::io::copy(&mut flate2::read::MultiGzDecoder::new(data), &mut out)
            }
            Container::Bzip2 => {
                std::io::copy(&mut bzip2::read::MultiBzDecoder::new(data), &mut out)
            }
            Container::Xz => lzma_rs::xz_decompress(&mut std::io::BufReader::new(data), &mut out)
                .map(|()| 0)
                .map_err(|e| match e {
                    lzma_rs::error::Error::IoError(io) => io,
                    other => std::io::Error::other(other.to_string()),
                }),
            Container::Zstd => zstd_frames(data, &mut out),
            _ => unreachable!("only compressions are inflated"),
        };
        match res {
            Ok(_) => {
                self.budget = out.left;
                Ok(out.buf)
            }
            Err(_) if out.left == 0 => Err(Unscannable::TooLarge),
            Err(e) => Err(Unscannable::Unreadable(format!(
                "{c:?} data is corrupt: {e}"
            ))),
        }
    }

    fn tar(&mut self, data: &[u8], path: &str, depth: u32) -> Step {
        let mut archive = tar::Archive::new(data);
        let entries = match archive.entries() {
            Ok(e) => e,
            Err(e) => return problem(path, Unscannable::Unreadable(format!("bad tar: {e}"))),
        };
        for entry in entries {
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => return problem(path, Unscannable::Unreadable(format!("bad tar: {e}"))),
            };
            // Links and directories carry no content of their own.
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let mut body = Vec::new();
            if let Err(e) = entry.read_to_end(&mut body) {
                return problem(path, Unscannable::Unreadable(format!("bad tar: {e}")));
            }
            if let Err(p) = self.walk(&body, &join(path, &name), depth + 1)? {
                return Ok(Err(p));
            }
        }
        Ok(Ok(()))
    }

    fn zip(&mut self, data: &[u8], path: &str, depth: u32) -> Step {
        let mut archive = match zip::ZipArchive::new(std::io::Cursor::new(data)) {
            Ok(a) => a,
            Err(e) => return problem(path, Unscannable::Unreadable(format!("bad zip: {e}"))),
        };
        for i in 0..archive.len() {
            let mut f = match archive.by_index(i) {
                Ok(f) => f,
                // Encrypted entries and compression methods without a decoder land here.
                Err(e) => return problem(path, Unscannable::Unreadable(format!("zip entry: {e}"))),
            };
            if f.is_dir() {
                continue;
            }
            let name = String::from_utf8_lossy(f.name_raw()).into_owned();
            let mut out = Capped {
                buf: Vec::new(),
                left: self.budget,
            };
            if let Err(e) = std::io::copy(&mut f, &mut out) {
                let why = if out.left == 0 {
                    Unscannable::TooLarge
                } else {
                    Unscannable::Unreadable(format!("zip entry {name}: {e}"))
                };
                return problem(&join(path, &name), why);
            }
            self.budget = out.left;
            drop(f);
            if let Err(p) = self.walk(&out.buf, &join(path, &name), depth + 1)? {
                return Ok(Err(p));
            }
        }
        Ok(Ok(()))
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}!{name}")
    }
}

/// Every zstd frame in `data`, one after another (a second frame must not hide anything).
fn zstd_frames(mut data: &[u8], out: &mut Capped) -> std::io::Result<u64> {
    while !data.is_empty() {
        let mut d = ruzstd::decoding::StreamingDecoder::new(&mut data)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        std::io::copy(&mut d, out)?;
    }
    Ok(0)
}

/// A byte sink that fails once its budget is spent, so a bomb stops at the cap.
struct Capped {
    buf: Vec<u8>,
    left: u64,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if b.len() as u64 > self.left {
            self.left = 0;
            return Err(std::io::Error::other("unpack budget spent"));
        }
        self.left -= b.len() as u64;
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        for (name, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, name, *body).unwrap();
        }
        t.into_inner().unwrap()
    }

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, body) in files {
            z.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(body).unwrap();
        }
        z.finish().unwrap().into_inner()
    }

    /// Each file found (inner path, content) and how the unpacking ended.
    type Found = (Vec<(String, Vec<u8>)>, Result<(), Problem>);

    fn files(content: &[u8], name: &str) -> Found {
        let mut seen = Vec::new();
        let res = unpack(content, name, &mut |p, b| {
            seen.push((p.to_string(), b.to_vec()));
            Ok(())
        })
        .unwrap();
        (seen, res)
    }

    #[test]
    fn every_level_is_opened_and_named() {
        let inner = zip_of(&[
            ("node_modules/x/key.txt", b"secret"),
            ("logo.png", b"\0png"),
        ]);
        let t = tar_of(&[("a/b.zip", &inner), ("notes.txt.gz", &gz(&gz(b"deep")))]);
        let (seen, res) = files(&gz(&t), "assets/data.bin");
        assert_eq!(res, Ok(()));
        let names: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "a/b.zip!node_modules/x/key.txt",
                "a/b.zip!logo.png",
                "notes.txt.gz!notes.txt!notes.txt (decompressed)"
            ]
        );
        assert_eq!(seen[2].1, b"deep");
        // A compressed file at the top is named after the pushed file.
        assert_eq!(files(&gz(b"x"), "dir/a.json.gz").0[0].0, "a.json");
    }

    #[test]
    fn depth_size_and_formats_are_bounded() {
        let mut c = b"secret".to_vec();
        for _ in 0..MAX_DEPTH {
            c = gz(&c);
        }
        assert_eq!(files(&c, "x").1, Ok(()), "{MAX_DEPTH} levels open");
        let (_, res) = files(&gz(&c), "x");
        assert_eq!(res.unwrap_err().why, Unscannable::TooDeep);

        // A bomb stops at the budget, also when spread over members.
        let bomb = gz(&vec![b'a'; 1 << 20]);
        let within = |c: &[u8], budget| unpack_within(c, "b", budget, &mut |_, _| Ok(())).unwrap();
        assert_eq!(within(&bomb, 1 << 20), Ok(()));
        assert_eq!(
            within(&bomb, (1 << 20) - 1).unwrap_err().why,
            Unscannable::TooLarge
        );
        let z = zip_of(&[("a", &[b'a'; 600][..]), ("b", &[b'b'; 600][..])]);
        assert_eq!(within(&z, 1000).unwrap_err().inner, "b");

        let seven = b"7z\xbc\xaf\x27\x1c\0\x04rest".to_vec();
        let t = tar_of(&[("in/x.7z", &seven)]);
        let p = files(&t, "t.tar").1.unwrap_err();
        assert_eq!(p.inner, "in/x.7z");
        assert!(matches!(p.why, Unscannable::Unreadable(_)));

        let mut cut = gz(b"truncated stream of text");
        cut.truncate(cut.len() - 6);
        assert!(matches!(
            files(&cut, "c.gz").1.unwrap_err().why,
            Unscannable::Unreadable(_)
        ));
    }

    #[test]
    fn concatenated_streams_are_read_to_the_end() {
        let two = [gz(b"first "), gz(b"second")].concat();
        assert_eq!(files(&two, "a.gz").0[0].1, b"first second");
    }
}
