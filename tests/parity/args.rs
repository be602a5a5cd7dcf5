//! The command line libtest accepts, as far as it applies to this harness: `cargo test`
//! passes the same arguments to every test binary, so this one must take them too.

/// What to run and how to report it.
#[derive(Debug, Default, PartialEq)]
pub struct Args {
    /// Positional filters: a case runs when its name contains any of them (all when none).
    pub filters: Vec<String>,
    /// `--skip`: a case whose name contains any of these does not run.
    pub skip: Vec<String>,
    /// `--exact`: filters and skips match whole names.
    pub exact: bool,
    /// `--list`: print the selected cases, run nothing.
    pub list: bool,
    /// `--ignored`: only ignored cases (there are none).
    pub ignored_only: bool,
    /// `-q`, `--quiet` or `--format terse`: less output.
    pub quiet: bool,
    /// `--help`.
    pub help: bool,
    /// Remarks for stderr: unknown options, options with no effect here.
    pub notes: Vec<String>,
}

/// Options that take a value (`--opt value` or `--opt=value`).
const WITH_VALUE: [&str; 7] = [
    "--skip",
    "--test-threads",
    "--format",
    "--color",
    "--logfile",
    "--shuffle-seed",
    "-Z",
];

/// Options accepted without effect: the harness runs cases one after another in name order
/// and prints as it goes, and no case is ignored, should panic or is a benchmark.
const NO_EFFECT: [&str; 10] = [
    "--include-ignored",
    "--nocapture",
    "--show-output",
    "--test",
    "--force-run-in-process",
    "--exclude-should-panic",
    "--report-time",
    "--ensure-time",
    "--shuffle",
    "--fail-fast",
];

impl Args {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Self {
        let mut a = Args::default();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            if !arg.starts_with('-') || arg == "-" {
                a.filters.push(arg);
                continue;
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let value = if WITH_VALUE.contains(&flag.as_str()) {
                match inline.or_else(|| it.next()) {
                    Some(v) => Some(v),
                    None => {
                        a.notes.push(format!("{flag} needs a value; ignored"));
                        continue;
                    }
                }
            } else {
                None
            };
            match (flag.as_str(), value) {
                ("--exact", _) => a.exact = true,
                ("--list", _) => a.list = true,
                ("--ignored", _) => a.ignored_only = true,
                ("-q" | "--quiet", _) => a.quiet = true,
                ("-h" | "--help", _) => a.help = true,
                ("--skip", Some(v)) => a.skip.push(v),
                ("--format", Some(v)) => match v.as_str() {
                    "pretty" => {}
                    "terse" => a.quiet = true,
                    other => a.notes.push(format!(
                        "--format {other} is not supported here; using pretty"
                    )),
                },
                ("--test-threads" | "--color" | "--logfile" | "--shuffle-seed" | "-Z", _) => {}
                (f, _) if NO_EFFECT.contains(&f) => {}
                (f, _) => a.notes.push(format!("unknown option {f} ignored")),
            }
        }
        a
    }

    fn matches(&self, name: &str, pattern: &str) -> bool {
        if self.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    }

    /// Whether the case `name` is selected.
    pub fn selects(&self, name: &str) -> bool {
        !self.ignored_only
            && (self.filters.is_empty() || self.filters.iter().any(|f| self.matches(name, f)))
            && !self.skip.iter().any(|s| self.matches(name, s))
    }
}

pub const USAGE: &str = "\
Usage: parity [OPTIONS] [FILTERS...]

Runs the parity cases (folders of tests/fixtures/parity) whose names contain any FILTER.

Options:
    --exact             filters and --skip match whole case names
    --skip FILTER       do not run cases matching FILTER (repeatable)
    --list              list the selected cases, run nothing
    --ignored           run only ignored cases (there are none)
    -q, --quiet         print only failures and the summary
    --format pretty|terse
    -h, --help          this text
Accepted without effect: --include-ignored, --nocapture, --show-output, --test-threads N,
--color WHEN, and libtest's other options. PARITY_VERBOSE=1 prints every output's errors.";

/// "1 test", "2 tests".
pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
