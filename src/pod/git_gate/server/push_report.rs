//! How a push ended, read from git's own answer to it: the `report-status` that
//! `git receive-pack` sends back (pkt-lines, inside side-band channel 1 when the client asked
//! for side-band). It is git's protocol, not our hook's wording, so the verdict does not
//! depend on what the hook prints.

/// How one push ended, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every ref was updated (the hook scanned it clean and upstream took it).
    Accepted,
    /// Refused; the reason label says by what.
    Refused(&'static str),
}

/// Reason: the pre-receive hook (scan, ref rules, or upstream refusing) declined the push.
pub const HOOK: &str = "hook";
/// Reason: git could not unpack what was sent.
pub const UNPACK: &str = "unpack";
/// Reason: git itself refused a ref update (lock failure, invalid ref, ...).
pub const GIT: &str = "git";
/// Reason: the answer ended before any report (the client or git broke off).
pub const INCOMPLETE: &str = "incomplete";
/// Reason: upstream could not be reached to refresh the mirror before the push.
pub const UPSTREAM_UNREACHABLE: &str = "upstream_unreachable";
/// Reason: `git http-backend` failed to run.
pub const BACKEND: &str = "backend";

/// Largest payload a pkt-line may carry (`LARGE_PACKET_MAX` minus the length prefix).
const MAX_PKT: usize = 65520;

/// Splits a byte stream into pkt-line payloads; `None` payload is a flush (or delim) packet.
#[derive(Default)]
struct PktReader {
    buf: Vec<u8>,
    broken: bool,
}

impl PktReader {
    fn push(&mut self, bytes: &[u8]) {
        if !self.broken {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next whole packet: `Some(None)` for flush/delim, `Some(Some(payload))` for data.
    fn next(&mut self) -> Option<Option<Vec<u8>>> {
        if self.broken || self.buf.len() < 4 {
            return None;
        }
        let len = std::str::from_utf8(&self.buf[..4])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok());
        let Some(len) = len.filter(|&l| l < 4 + MAX_PKT + 1 && l != 3) else {
            // Not pkt-lines: stop reading rather than guess.
            self.broken = true;
            self.buf.clear();
            return None;
        };
        if len < 4 {
            self.buf.drain(..4);
            return Some(None);
        }
        if self.buf.len() < len {
            return None;
        }
        let payload = self.buf[4..len].to_vec();
        self.buf.drain(..len);
        Some(Some(payload))
    }
}

/// Reads `git receive-pack`'s answer as it streams past.
#[derive(Default)]
pub struct PushReport {
    outer: PktReader,
    inner: PktReader,
    sideband: Option<bool>,
    unpack: Option<bool>,
    ok: usize,
    ng: Vec<String>,
}

impl PushReport {
    /// Feeds the next bytes of the answer.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.outer.push(bytes);
        while let Some(pkt) = self.outer.next() {
            let Some(payload) = pkt else { continue };
            let sideband = *self
                .sideband
                .get_or_insert(matches!(payload.first(), Some(1..=3)));
            if !sideband {
                self.line(&payload);
            } else if payload.first() == Some(&1) {
                // Channel 1 carries the report as pkt-lines of its own; 2 is progress (the
                // hook's messages), 3 a fatal error: neither is the report.
                self.inner.push(&payload[1..]);
                while let Some(inner) = self.inner.next() {
                    if let Some(line) = inner {
                        self.line(&line);
                    }
                }
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\n');
        if let Some(rest) = line.strip_prefix("unpack ") {
            self.unpack = Some(rest == "ok");
        } else if line.starts_with("ok ") {
            self.ok += 1;
        } else if let Some(rest) = line.strip_prefix("ng ") {
            let reason = rest.split_once(' ').map_or("", |(_, r)| r);
            self.ng.push(reason.to_string());
        }
    }

    /// The verdict on what was read so far (at the end of the answer: the push's).
    pub fn verdict(&self) -> Verdict {
        match self.unpack {
            None => Verdict::Refused(INCOMPLETE),
            Some(false) => Verdict::Refused(UNPACK),
            Some(true) if self.ng.is_empty() && self.ok > 0 => Verdict::Accepted,
            Some(true)
                if self
                    .ng
                    .iter()
                    .any(|r| r.contains("pre-receive hook declined")) =>
            {
                Verdict::Refused(HOOK)
            }
            Some(true) if self.ng.is_empty() => Verdict::Refused(INCOMPLETE),
            Some(true) => Verdict::Refused(GIT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(payload: &[u8]) -> Vec<u8> {
        let mut v = format!("{:04x}", payload.len() + 4).into_bytes();
        v.extend_from_slice(payload);
        v
    }

    /// A report as receive-pack sends it, optionally wrapped in side-band with a progress
    /// message in front.
    fn answer(lines: &[&str], sideband: bool) -> Vec<u8> {
        let mut report = Vec::new();
        for l in lines {
            report.extend(pkt(format!("{l}\n").as_bytes()));
        }
        report.extend(b"0000");
        if !sideband {
            return report;
        }
        let mut out = pkt(b"\x02remote: git-gate: REFUSED refs/heads/main: unpack ok\n");
        for chunk in report.chunks(7) {
            let mut p = vec![1];
            p.extend_from_slice(chunk);
            out.extend(pkt(&p));
        }
        out.extend(b"0000");
        out
    }

    fn read(bytes: &[u8], split: usize) -> Verdict {
        let mut r = PushReport::default();
        let (a, b) = bytes.split_at(split.min(bytes.len()));
        r.feed(a);
        r.feed(b);
        r.verdict()
    }

    #[test]
    fn verdicts_come_from_the_report_at_any_split_with_or_without_side_band() {
        let cases = [
            (vec!["unpack ok", "ok refs/heads/main"], Verdict::Accepted),
            (
                vec!["unpack ok", "ng refs/heads/main pre-receive hook declined"],
                Verdict::Refused(HOOK),
            ),
            (
                vec![
                    "unpack ok",
                    "ok refs/heads/a",
                    "ng refs/heads/b failed to lock",
                ],
                Verdict::Refused(GIT),
            ),
            (
                vec![
                    "unpack index-pack failed",
                    "ng refs/heads/main unpacker error",
                ],
                Verdict::Refused(UNPACK),
            ),
        ];
        for (lines, want) in cases {
            for sideband in [false, true] {
                let bytes = answer(&lines, sideband);
                for split in 0..=bytes.len() {
                    assert_eq!(read(&bytes, split), want, "{lines:?} {sideband} {split}");
                }
            }
        }
        // The hook's progress text (channel 2) never counts as the report.
        let only_progress = pkt(b"\x02unpack ok\nok refs/heads/main\n");
        assert_eq!(read(&only_progress, 0), Verdict::Refused(INCOMPLETE));
        assert_eq!(read(b"", 0), Verdict::Refused(INCOMPLETE));
        assert_eq!(
            read(b"not pkt-lines at all", 3),
            Verdict::Refused(INCOMPLETE)
        );
    }
}
