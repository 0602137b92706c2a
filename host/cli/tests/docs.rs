//! The pages a newcomer reads, README.md and docs/*.md, against the
//! repository and the CLI they describe: every relative link leads to a
//! file (and, with an anchor, to a heading of that file), and every
//! `switchyard` command a shell code block shows parses: its subcommands
//! exist and their `--help` names every long flag the line uses. A dead
//! link, a renamed heading or a flag the CLI does not take fails here, each
//! one listed with its file and line. And the copies of the WIT contract
//! that published crates carry are the repository's.

use switchyard_test_support as common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// A Markdown page: its path from the repository's root, and its text.
struct Page {
    path: PathBuf,
    text: String,
}

/// README.md and every docs/*.md.
fn pages() -> Vec<Page> {
    let root = common::repo_root();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ can be listed")
        .flatten()
        .map(|entry| Path::new("docs").join(entry.file_name()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    paths.sort();
    paths.insert(0, PathBuf::from("README.md"));
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(root.join(&path))
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            Page { path, text }
        })
        .collect()
}

/// A line of a page: its number (from 1), its text, and the info string of
/// the fenced code block it is in (`sh`, `json`, empty for an untyped
/// block), `None` in prose. Fence lines themselves are left out.
struct Line<'a> {
    number: usize,
    text: &'a str,
    block: Option<&'a str>,
}

fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    // The open block's info string and the length of its fence.
    let mut open: Option<(&str, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let ticks = trimmed.len() - trimmed.trim_start_matches('`').len();
        match open {
            None if ticks >= 3 => {
                open = Some((trimmed[ticks..].trim(), ticks));
                continue;
            }
            Some((_, fence)) if ticks >= fence && trimmed[ticks..].trim().is_empty() => {
                open = None;
                continue;
            }
            _ => {}
        }
        out.push(Line {
            number: i + 1,
            text: line,
            block: open.map(|(info, _)| info),
        });
    }
    out
}

/// An ATX heading's text: `## The two commands` -> `The two commands`.
fn heading(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let level = t.len() - t.trim_start_matches('#').len();
    let rest = &t[level..];
    if (1..=6).contains(&level) && (rest.is_empty() || rest.starts_with(' ')) {
        Some(rest.trim().trim_end_matches('#').trim_end())
    } else {
        None
    }
}

/// The anchor GitHub gives a heading: its text in lower case, without
/// punctuation (code marks included), each space a hyphen.
fn slug(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(*c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a page's headings give; a repeated one gets `-1`, `-2`...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in lines(text) {
        if line.block.is_some() {
            continue;
        }
        let Some(title) = heading(line.text) else {
            continue;
        };
        let anchor = slug(title);
        let n = seen.entry(anchor.clone()).or_default();
        out.insert(if *n == 0 {
            anchor
        } else {
            format!("{anchor}-{n}")
        });
        *n += 1;
    }
    out
}

/// The target of every inline link and image in a page's prose
/// (`[text](target)`, `![alt](target)`; code spans left out), with its
/// line.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in lines(text) {
        if line.block.is_some() || line.text.trim().is_empty() {
            // A code span ends with its paragraph.
            in_code = false;
            continue;
        }
        let prose: String = line
            .text
            .chars()
            .map(|c| {
                if c == '`' {
                    in_code = !in_code;
                    ' '
                } else if in_code {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or_default();
            out.push((line.number, target.trim_matches(['<', '>']).to_owned()));
            rest = &after[end..];
        }
    }
    out
}

/// `docs/../README.md` -> `README.md`, without asking the file system.
fn tidy(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            part => out.push(part),
        }
    }
    out
}

/// Every relative link of `pages` that leads nowhere: to no file, or to an
/// anchor no heading of the Markdown file gives.
fn link_problems(root: &Path, pages: &[Page]) -> Vec<String> {
    let mut anchors_of: BTreeMap<PathBuf, BTreeSet<String>> = pages
        .iter()
        .map(|page| (page.path.clone(), anchors(&page.text)))
        .collect();
    let mut problems = Vec::new();
    for page in pages {
        for (line, target) in links(&page.text) {
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target.as_str(), ""));
            let dest = if file.is_empty() {
                page.path.clone()
            } else {
                tidy(&page.path.parent().unwrap_or(Path::new("")).join(file))
            };
            let at = format!("{}:{line}: ({target})", page.path.display());
            if !file.is_empty() && !root.join(&dest).exists() {
                problems.push(format!("{at}: {} does not exist", dest.display()));
                continue;
            }
            if anchor.is_empty() || dest.extension().is_none_or(|x| x != "md") {
                continue;
            }
            let known = anchors_of.entry(dest.clone()).or_insert_with(|| {
                anchors(&std::fs::read_to_string(root.join(&dest)).unwrap_or_default())
            });
            if !known.contains(anchor) {
                problems.push(format!(
                    "{at}: {} has no heading whose anchor is #{anchor}",
                    dest.display()
                ));
            }
        }
    }
    problems
}

/// The code blocks whose lines are shell commands, by info string.
const SHELL: &[&str] = &["", "sh", "bash", "console", "shell"];

/// Every command line the shell code blocks of a page show, with the number
/// of its first line; a line ending in `\` is joined with the next.
fn shown_commands(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for line in lines(text) {
        let shell = line.block.is_some_and(|info| {
            SHELL.contains(&info.split_whitespace().next().unwrap_or_default())
        });
        if !shell {
            pending = None;
            continue;
        }
        continue_line(&mut pending, &mut out, line.number, line.text.trim());
    }
    out
}

/// Adds `text` (at line `number`) to the command `pending`, or starts one:
/// a command ending in `\` waits for its next line, any other goes to `out`.
fn continue_line(
    pending: &mut Option<(usize, String)>,
    out: &mut Vec<(usize, String)>,
    number: usize,
    text: &str,
) {
    let (first, mut command) = pending.take().unwrap_or((number, String::new()));
    command.push_str(text);
    if command.ends_with('\\') {
        command.pop();
        command.truncate(command.trim_end().len());
        command.push(' ');
        *pending = Some((first, command));
    } else {
        out.push((first, command));
    }
}

/// A command line's words, quotes kept (so a quoted word is never taken
/// for a flag), up to a comment or the end of its first command (`|`, `;`,
/// `&`).
fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            word.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                word.push(c);
            }
            '\\' => {
                word.push(c);
                word.extend(chars.next());
            }
            '#' if word.is_empty() => break,
            '|' | ';' | '&' => break,
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// `NAME=value`: a variable set for the command that follows.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The arguments of a `switchyard` command line (a `$ ` prompt and `X=1`
/// assignments before it dropped, and `...`, which stands for more
/// arguments), or `None` when the line runs something else.
fn switchyard_args(command: &str) -> Option<Vec<String>> {
    let mut words = shell_words(command).into_iter().peekable();
    if words.peek().is_some_and(|w| w == "$") {
        words.next();
    }
    let mut words = words.skip_while(|w| is_assignment(w.as_str()));
    let program = words.next()?;
    if program == "switchyard" || program.ends_with("/switchyard") {
        Some(words.filter(|w| w != "...").collect())
    } else {
        None
    }
}

/// Whether a `--help` text defines `--flag` on an option's own line
/// (`-s, --flag <VALUE>`, `--flag`), not merely mentions it.
fn names_flag(help: &str, flag: &str) -> bool {
    let needle = format!("--{flag}");
    help.lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .any(|l| {
            l.match_indices(needle.as_str()).any(|(at, _)| {
                !l[at + needle.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            })
        })
}

/// `switchyard <path> --help`, run once per command path.
#[derive(Default)]
struct Helps(BTreeMap<Vec<String>, Result<String, String>>);

impl Helps {
    /// The help text of a command path, or why there is none.
    fn of(&mut self, path: &[String]) -> Result<String, String> {
        self.0
            .entry(path.to_vec())
            .or_insert_with(|| {
                let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
                    .args(path)
                    .arg("--help")
                    .output()
                    .expect("run switchyard");
                if o.status.success() {
                    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
                } else {
                    Err(format!(
                        "`switchyard {} --help` fails ({}): {}",
                        path.join(" "),
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    ))
                }
            })
            .clone()
    }

    /// What is wrong with a `switchyard` command's arguments: a subcommand
    /// the CLI does not have, or a long flag its `--help` does not define.
    fn problems(&mut self, args: &[String]) -> Vec<String> {
        let mut path: Vec<String> = Vec::new();
        let mut help = match self.of(&path) {
            Ok(help) => help,
            Err(why) => return vec![why],
        };
        // Down the subcommands while the command has some (clap lists them
        // under "Commands:") and the next word is not a flag.
        while help.lines().any(|l| l.trim_end() == "Commands:") {
            match args.get(path.len()) {
                Some(word) if !word.starts_with('-') => {
                    path.push(word.clone());
                    help = match self.of(&path) {
                        Ok(help) => help,
                        Err(why) => return vec![why],
                    };
                }
                _ => break,
            }
        }
        let mut problems = Vec::new();
        for word in &args[path.len()..] {
            // `[--trust-key other.pem]`: an optional flag, shown as such.
            let Some(flag) = word.trim_start_matches(['[', '(']).strip_prefix("--") else {
                continue;
            };
            let flag: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if flag.is_empty() {
                // `--`: what follows are operands.
                break;
            }
            if !names_flag(&help, &flag) {
                problems.push(format!(
                    "`switchyard {} --help` has no --{flag}",
                    path.join(" ")
                ));
            }
        }
        problems
    }
}

/// What is wrong with each `switchyard` command the pages' code blocks show
/// (`file:line: command: problem`), and how many such commands there are.
fn command_problems(helps: &mut Helps, pages: &[Page]) -> (usize, Vec<String>) {
    let mut shown = 0;
    let mut problems = Vec::new();
    for page in pages {
        for (line, command) in shown_commands(&page.text) {
            let Some(args) = switchyard_args(&command) else {
                continue;
            };
            shown += 1;
            for problem in helps.problems(&args) {
                problems.push(format!(
                    "{}:{line}: `{command}`: {problem}",
                    page.path.display()
                ));
            }
        }
    }
    (shown, problems)
}

#[test]
fn every_relative_link_in_the_docs_leads_somewhere() {
    let problems = link_problems(&common::repo_root(), &pages());
    assert!(
        problems.is_empty(),
        "{} links in README.md and docs/ lead nowhere:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_switchyard_command_the_docs_show_parses() {
    let (shown, problems) = command_problems(&mut Helps::default(), &pages());
    // README.md and docs/ show about forty; a handful would mean the code
    // blocks were misread, and the check checked nothing.
    assert!(
        shown >= 30,
        "only {shown} switchyard commands found in the code blocks of README.md and docs/"
    );
    assert!(
        problems.is_empty(),
        "{} switchyard commands shown in README.md and docs/ do not parse:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// A page with one of each mistake the checks are for.
const FLAWED: &str = r#"# Example

See [the tour](../README.md#a-5-minute-tour), [this page](#example), [a dead one](gone.md),
[a missing heading](../README.md#no-such-heading) and `[code, not a link](gone.md)`.

```sh
$ SWITCHYARD_LOG=debug switchyard shadow report orders --admin-token-file t   # accepted
switchyard serve --store dir:./s ... \
    --no-such-flag 1
switchyard frobnicate
echo --not-a-switchyard-flag
```
"#;

#[test]
fn the_checks_find_a_dead_link_a_missing_heading_and_what_the_cli_does_not_take() {
    let page = [Page {
        path: PathBuf::from("docs/example.md"),
        text: FLAWED.to_owned(),
    }];
    let found = link_problems(&common::repo_root(), &page);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("docs/example.md:3: (gone.md): ")
            && found[0].ends_with("docs/gone.md does not exist"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("docs/example.md:4: ") && found[1].contains("#no-such-heading"),
        "{found:#?}"
    );
    let (shown, commands) = command_problems(&mut Helps::default(), &page);
    assert_eq!(shown, 3, "{commands:#?}");
    assert_eq!(commands.len(), 2, "{commands:#?}");
    assert!(
        commands[0].starts_with("docs/example.md:8: ")
            && commands[0].ends_with("`switchyard serve --help` has no --no-such-flag"),
        "{commands:#?}"
    );
    assert!(
        commands[1].starts_with("docs/example.md:10: ") && commands[1].contains("frobnicate"),
        "{commands:#?}"
    );
}

/// Each published crate that reads the WIT contract carries its own copy
/// (a crate is packaged alone); every copy is the repository's `wit/`.
#[test]
fn every_crates_copy_of_the_wit_contract_is_the_repositorys() {
    let root = common::repo_root();
    let contract = std::fs::read_to_string(root.join("wit/policy.wit")).unwrap();
    for copy in [
        "host/core/wit/policy.wit",
        "host/cli/wit/policy.wit",
        "guest-sdk/wit/policy.wit",
    ] {
        let text = std::fs::read_to_string(root.join(copy))
            .unwrap_or_else(|e| panic!("{copy}: {e}; copy wit/policy.wit there"));
        assert!(
            text == contract,
            "{copy} differs from wit/policy.wit: copy it again (cp wit/policy.wit {copy})"
        );
    }
    // And no crate reads the repository's copy from outside its folder.
    for (file, outside) in [
        ("host/core/src/bindings.rs", "../../wit"),
        ("host/cli/src/build/tools.rs", "../../../../wit"),
        ("guest-sdk/src/lib.rs", "\"../wit\""),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(!text.contains(outside), "{file} reads {outside}");
    }
}

/// The shell lines of a GitHub Actions workflow's `run:` steps (inline, or
/// a `run: |` block), with their line numbers; a line ending in `\` is
/// joined with the next.
fn workflow_commands(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut block: Option<usize> = None;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        let script = match block {
            Some(at) if indent > at || trimmed.is_empty() => Some(trimmed),
            _ => {
                block = None;
                let step = trimmed.trim_start_matches("- ");
                match step.strip_prefix("run:").map(str::trim) {
                    Some("|") | Some(">") => {
                        block = Some(indent + (trimmed.len() - step.len()));
                        None
                    }
                    Some(inline) => Some(inline),
                    None => None,
                }
            }
        };
        let Some(script) = script.filter(|s| !s.is_empty()) else {
            continue;
        };
        continue_line(&mut pending, &mut out, i + 1, script);
    }
    out
}

/// `deploy/github-actions.yml`, the pipeline a team copies: valid against
/// GitHub's workflow schema (check-jsonschema's vendored copy, offline),
/// and every `switchyard` command in its steps exists with those flags;
/// the scripts it runs are in the repository.
#[test]
fn the_example_pipeline_is_a_valid_workflow_whose_commands_all_exist() {
    let root = common::repo_root();
    let file = root.join("deploy/github-actions.yml");
    let out = Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(&file)
        .output()
        .expect("check-jsonschema runs (python3 -m pip install check-jsonschema==0.33.0)");
    assert!(
        out.status.success(),
        "{} is not a valid GitHub Actions workflow:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let commands = workflow_commands(&text);
    let mut helps = Helps::default();
    let mut shown = 0;
    let mut problems = Vec::new();
    for (line, command) in &commands {
        // Each command of a line (`umask 077 && printf ...`).
        for part in command.split("&&") {
            let words = shell_words(part);
            if words.first().is_some_and(|w| w == "python3")
                && let Some(script) = words.get(1).filter(|w| w.ends_with(".py"))
                && !root.join(script).is_file()
            {
                problems.push(format!("line {line}: {script} is not in the repository"));
            }
            let Some(args) = switchyard_args(part) else {
                continue;
            };
            shown += 1;
            for problem in helps.problems(&args) {
                problems.push(format!("line {line}: `{}`: {problem}", part.trim()));
            }
        }
    }
    // build, test, publish, set, mode, status, promote, rollback.
    assert!(
        shown >= 8,
        "only {shown} switchyard commands read: {commands:#?}"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The reader finds what a flawed step names.
    let flawed = "jobs:\n  x:\n    steps:\n      - run: switchyard promote orders --no-such-flag\n      - name: two\n        run: |\n          switchyard mode orders synthetic \\\n            --frobnicate\n";
    let found: Vec<String> = workflow_commands(flawed)
        .iter()
        .flat_map(|(_, c)| helps.problems(&switchyard_args(c).unwrap()))
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
}

/// The JSON code blocks of a page that are rollout plans (they have
/// `"stages"`).
fn plan_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        match (&mut block, line.trim_start()) {
            (None, l) if l.starts_with("```json") => block = Some(String::new()),
            (Some(b), l) if l.starts_with("```") => {
                if b.contains("\"stages\"") {
                    out.push(b.clone());
                }
                block = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_rollout_plan_the_repository_and_the_docs_show_passes_rollout_check() {
    let root = common::repo_root();
    let tmp = tempfile::tempdir().unwrap();
    let mut plans: Vec<PathBuf> = std::fs::read_dir(root.join("deploy/rollouts"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    for page in ["README.md", "docs/rollouts.md"] {
        let text = std::fs::read_to_string(root.join(page)).unwrap();
        for (i, block) in plan_blocks(&text).into_iter().enumerate() {
            let path = tmp
                .path()
                .join(format!("{}-{i}.json", page.replace('/', "-")));
            std::fs::write(&path, block).unwrap();
            plans.push(path);
        }
    }
    assert!(plans.len() >= 5, "{plans:?}");
    for plan in &plans {
        let o = Command::new(common::workspace_bin("switchyard"))
            .args(["rollout", "check", "--plan"])
            .arg(plan)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}: {}",
            plan.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let steps: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(!steps["steps"].as_array().unwrap().is_empty());
    }
    // And the check can fail.
    let bad = tmp.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"stages": [{"stage": "canary", "percent": 0, "bake": "1m"}]}"#,
    )
    .unwrap();
    let o = Command::new(common::workspace_bin("switchyard"))
        .args(["rollout", "check", "--plan"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("percent 0 is out of range"));
}
