//! What the doctor prints: one `[pass]`, `[FAIL]` or `[skip]` line per check, a `fix:` line
//! under each failure, and whether anything failed (the exit code). Every check writes through
//! here, so the HTTPS and MQTT checks read alike.

use std::fmt::Write as _;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It works.
    Pass,
    /// It does not; the line says how to fix it.
    Fail,
    /// Not checked, because something before it failed.
    Skip,
}

/// The report: lines as printed, and whether everything passed.
#[derive(Debug, Default)]
pub struct Report {
    text: String,
    failed: bool,
}

impl Report {
    fn line(&mut self, verdict: Verdict, what: &str, detail: &str, fix: Option<&str>) {
        let mark = match verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        };
        self.failed |= verdict == Verdict::Fail;
        let _ = writeln!(self.text, "[{mark}] {what}: {detail}");
        if let Some(fix) = fix {
            let _ = writeln!(self.text, "       fix: {fix}");
        }
    }

    pub(super) fn pass(&mut self, what: &str, detail: &str) {
        self.line(Verdict::Pass, what, detail, None);
    }

    pub(super) fn fail(&mut self, what: &str, detail: &str, fix: &str) {
        self.line(Verdict::Fail, what, detail, Some(fix));
    }

    pub(super) fn skip(&mut self, what: &str, why: &str) {
        self.line(Verdict::Skip, what, why, None);
    }

    /// The printed lines.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when any check failed.
    pub fn failed(&self) -> bool {
        self.failed
    }
}
