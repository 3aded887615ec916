//! Issue 22: pgarc as DBAs install their tools. The Debian package that `scripts/package.sh`
//! builds installs with `dpkg -i` into a throwaway root, its binary runs from there, every man
//! page renders without a warning, bash completes from the installed script, lintian finds no
//! error; and the man pages document exactly the options the command line accepts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

/// Runs `cmd`, asserts it succeeded, returns its stdout and stderr.
fn run(cmd: &mut Command) -> (String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// `man`'s output without its overstrikes (`N\bN` for bold, `_\bx` for underline).
fn plain(text: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

/// Builds the package from the binary this test run built (the dev profile: `cargo test`
/// holds the build directory, so nothing is compiled again), lintian included.
fn build_package() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (stdout, _) = run(Command::new("bash")
        .arg(root.join("scripts/package.sh"))
        .env("PGARC_PACKAGE_PROFILE", "dev")
        .env("PGARC_PACKAGE_NO_BUILD", "1"));
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    let deb = if deb.is_absolute() {
        deb
    } else {
        root.join(deb)
    };
    assert!(
        deb.extension().is_some_and(|e| e == "deb") && deb.is_file(),
        "package.sh names the package it built last: {stdout}"
    );
    deb
}

/// Installs `deb` with `dpkg -i` into a new dpkg root under `dir`.
fn install(deb: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let admin = root.join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(d)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    std::fs::write(admin.join("available"), "").unwrap();
    // postgresql-client is not in the empty root: only that dependency is let go.
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-depends",
            "--force-not-root",
            "--log=/dev/null",
            "-i",
        ])
        .arg(deb));
    let (status, _) = run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["-s", "pgarc"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(
        status.contains("postgresql-client"),
        "the package depends on postgresql-client: {status}"
    );
    root
}

/// Acceptance 1 and 3 of issue 22.
#[test]
fn the_debian_package_installs_and_its_binary_man_pages_and_completions_work() {
    let deb = build_package();
    let dir = tempfile::tempdir().unwrap();
    let root = install(&deb, dir.path());

    // The installed binary, and what --version says.
    let (version, _) = run(Command::new(root.join("usr/bin/pgarc")).arg("--version"));
    assert!(
        version.starts_with(&format!("pgarc {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert!(
        !version.contains("(commit unknown)"),
        "built in a git checkout: {version}"
    );
    for says in [
        "PostgreSQL servers",
        "14 to 18",
        "1.12 to 1.16",
        "pgarc archive format: writes 3.0",
    ] {
        assert!(
            version.contains(says),
            "--version names {says:?}: {version}"
        );
    }

    // Every subcommand has its page, and each renders without a warning.
    let man1 = root.join("usr/share/man/man1");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man1)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    // As defined (built, clap would add its `help` subcommand, which has no page).
    let cli = pgarc::cli::Cli::command();
    let expected: BTreeSet<String> = std::iter::once("pgarc.1.gz".to_string())
        .chain(
            cli.get_subcommands()
                .map(|s| format!("pgarc-{}.1.gz", s.get_name())),
        )
        .collect();
    let found: BTreeSet<String> = pages
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(found, expected);
    for page in &pages {
        let (text, warnings) = run(Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l"])
            .arg(page)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0"));
        assert!(warnings.trim().is_empty(), "{}: {warnings}", page.display());
        let text = plain(&text);
        assert!(
            text.contains("NAME") && text.contains("pgarc"),
            "{}: {text}",
            page.display()
        );
    }
    let (dump_page, _) = run(Command::new("man")
        .arg("-l")
        .arg(man1.join("pgarc-dump.1.gz")));
    assert!(plain(&dump_page).contains("--split-size"), "{dump_page}");

    // bash loads the installed completion and completes `pgarc dump --sp`.
    let script = root.join("usr/share/bash-completion/completions/pgarc");
    let (words, _) = run(Command::new("bash").arg("-c").arg(format!(
        "source '{}' && COMP_WORDS=(pgarc dump --sp) && COMP_CWORD=2 && \
         COMP_LINE='pgarc dump --sp' && COMP_POINT=${{#COMP_LINE}} && \
         _pgarc pgarc --sp dump && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    )));
    assert_eq!(
        words.split_whitespace().collect::<Vec<_>>(),
        ["--split-size"],
        "{words}"
    );
    for (file, what) in [
        ("usr/share/zsh/vendor-completions/_pgarc", "#compdef pgarc"),
        (
            "usr/share/fish/vendor_completions.d/pgarc.fish",
            "complete -c pgarc",
        ),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(text.contains(what) && text.contains("split-size"), "{file}");
    }
    for doc in ["copyright", "README.md", "changelog.Debian.gz"] {
        assert!(
            root.join("usr/share/doc/pgarc").join(doc).is_file(),
            "{doc}"
        );
    }
}

/// The options a man page documents, as `--long` and `-s` words: the headings of its items,
/// in OPTIONS and in the sections of options grouped under a heading of their own.
fn options_in_page(roff: &str) -> BTreeSet<String> {
    let text = roff.replace("\\-", "-");
    let mut out = BTreeSet::new();
    // Each option's heading is the line after `.TP`: `\fB-j\fR, \fB--jobs\fR=\fIN\fR`.
    for line in text.lines() {
        // Other names, as `--help` says them: `[aliases: --blobs]`.
        if let Some(names) = line.strip_prefix("[aliases: ") {
            let names = names.trim_end_matches(']');
            out.extend(names.split(", ").map(str::to_string));
        }
    }
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != ".TP" {
            continue;
        }
        let heading = lines.next().unwrap_or("");
        for word in heading.split("\\fB").skip(1) {
            let word = word.split("\\fR").next().unwrap_or("");
            let word = word.split(['=', ' ', ',']).next().unwrap_or("");
            if word.starts_with('-') && word.len() > 1 {
                out.insert(word.to_string());
            }
        }
    }
    out
}

/// The options `cmd` accepts (help and version included, as clap adds them).
fn options_of(cmd: &clap::Command) -> BTreeSet<String> {
    let mut cmd = cmd.clone();
    cmd.build();
    let mut out = BTreeSet::new();
    for arg in cmd.get_arguments().filter(|a| !a.is_positional()) {
        assert!(
            !arg.is_hide_set(),
            "{} hides --{:?}",
            cmd.get_name(),
            arg.get_long()
        );
        out.extend(
            arg.get_long_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(|l| format!("--{l}")),
        );
        out.extend(
            arg.get_short_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(|s| format!("-{s}")),
        );
    }
    out
}

/// Acceptance 2: the pages `pgarc manpages` writes document every option of every subcommand
/// and no other; then the binary itself accepts each documented option (`--help` after it
/// makes any option parse without its value).
#[test]
fn every_option_in_the_man_pages_is_one_the_binary_accepts_and_the_other_way_round() {
    let dir = tempfile::tempdir().unwrap();
    run(crate::util::pgarc().arg("manpages").arg(dir.path()));
    // Built, as the parser is (help and version flags added); its pages are those of the
    // subcommands as defined (clap's own `help` subcommand has none).
    let mut cli = pgarc::cli::Cli::command();
    let names: Vec<String> = cli
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    cli.build();
    let mut checked = 0;
    for (page, cmd) in
        std::iter::once(("pgarc.1".to_string(), cli.clone())).chain(names.iter().map(|n| {
            (
                format!("pgarc-{n}.1"),
                cli.find_subcommand(n).unwrap().clone(),
            )
        }))
    {
        let roff = std::fs::read_to_string(dir.path().join(&page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        let documented = options_in_page(&roff);
        assert_eq!(documented, options_of(&cmd), "{page}");
        if cmd.get_name() != "pgarc" {
            for option in &documented {
                let out = crate::util::pgarc()
                    .args([cmd.get_name(), option.as_str(), "--help"])
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    !stderr.contains(&format!("unexpected argument '{option}'")),
                    "pgarc {} {option}: {stderr}",
                    cmd.get_name()
                );
            }
        }
        checked += documented.len();
    }
    assert!(checked > 60, "{checked} options documented");
}
