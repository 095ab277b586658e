//! The interactive shell: a line editor with history and completion, `help`, `exit`. Locks
//! acquired here are held by the session (holder `USER@HOST/dshell-session-NNN`), renewed while
//! it lives, and released when it exits.

use clap::{CommandFactory, Parser};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use super::commands::{end_session, execute, Session};
use super::session::{session_holder, Keeper};
use super::{client::check, Command, Failure, Identity, Output};

/// One line typed in the shell: the batch commands, without connection flags.
#[derive(Parser, Debug)]
#[command(name = "dshell>", no_binary_name = true, disable_version_flag = true, about = "Commands (the same as in batch mode):")]
struct Line {
    #[command(flatten)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

/// Words that may follow each command path, for tab completion.
fn candidates(path: &[&str]) -> &'static [&'static str] {
    match path {
        [] => &["manager", "orch", "help", "exit"],
        ["manager"] | ["help", "manager"] => &["lock", "member", "cluster"],
        ["manager", "cluster"] | ["help", "manager", "cluster"] => &["show", "voters"],
        ["manager", "lock"] | ["help", "manager", "lock"] => &["acquire", "status", "release", "list", "run"],
        ["manager", "member"] | ["help", "manager", "member"] => &["list", "remove", "approve"],
        ["orch"] | ["help", "orch"] => &["run"],
        ["help"] => &["manager", "orch"],
        ["manager", "lock", "acquire", ..] => &["--scope", "--type", "--timeout", "--wait", "--priority", "--reason", "--holder", "--json"],
        ["manager", "lock", "status", ..] => &["--scope", "--json"],
        ["manager", "lock", "release", ..] => &["--scope", "--holder", "--force", "--json"],
        ["manager", "lock", "run", ..] => &["--scope", "--timeout", "--wait", "--type", "--grace", "--holder", "--"],
        ["orch", "run", ..] => &["--var"],
        _ => &["--json"],
    }
}

struct Completion;

impl Completer for Completion {
    type Candidate = String;
    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<String>)> {
        let before = &line[..pos];
        let start = before.rfind(' ').map_or(0, |i| i + 1);
        let words: Vec<&str> = before[..start].split_whitespace().filter(|w| !w.starts_with('-')).collect();
        let partial = &before[start..];
        let path: Vec<&str> = words.iter().take(3).copied().collect();
        let found = candidates(&path).iter().filter(|c| c.starts_with(partial)).map(|c| format!("{c} ")).collect();
        Ok((start, found))
    }
}
impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

/// Splits a line into words: spaces separate, single and double quotes group, `\` escapes.
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let (mut out, mut word, mut quote, mut any) = (Vec::new(), String::new(), None::<char>, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, ' ' | '\t') => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '\\') => {
                word.push(chars.next().ok_or("a line cannot end with \\")?);
                any = true;
            }
            (_, c) => {
                word.push(c);
                any = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unclosed quote".into());
    }
    if any {
        out.push(word);
    }
    Ok(out)
}

pub fn run(me: Identity) -> Result<u8, Failure> {
    // Check the node and the credentials before taking commands.
    let (status, v) = me.client.get("/api/v1.0/members")?;
    check(status, &v)?;
    let holder = session_holder(&me.user, &me.host);
    let session = Session { holder: holder.clone(), keeper: Keeper::new(me.client.clone()) };
    let mut editor: Editor<Completion, rustyline::history::DefaultHistory> =
        Editor::new().map_err(|e| Failure::Other(format!("cannot start the line editor: {e}")))?;
    editor.set_helper(Some(Completion));
    let history = super::home().map(|h| h.join(".dshell_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!(
        "dshell {} connected to {}:{} ({} voters). Session holder: {holder}. Type help, or exit.",
        env!("CARGO_PKG_VERSION"),
        me.client.host,
        me.client.port,
        v["roster_size"]
    );
    let mut last = 0;
    loop {
        for lost in session.keeper.take_lost() {
            eprintln!("dshell: lost the lock on {}: {}", lost.scope, lost.why);
        }
        let line = match editor.readline("dshell> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("dshell: {e}");
                break;
            }
        };
        let words = match words(&line) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("dshell: {e}");
                continue;
            }
        };
        if words.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        match words[0].as_str() {
            "exit" | "quit" => break,
            "help" | "?" => {
                if words.len() == 1 {
                    let _ = Line::command().print_help();
                    println!("\n  help COMMAND...   help for one command, e.g. help manager lock acquire\n  exit              release this session's locks and leave");
                } else {
                    let mut path = words[1..].to_vec();
                    path.push("--help".into());
                    if let Err(e) = Line::try_parse_from(path) {
                        let _ = e.print();
                    }
                }
                continue;
            }
            _ => {}
        }
        last = match Line::try_parse_from(&words) {
            Ok(parsed) => match execute(&me, Some(&session), parsed.command, parsed.output) {
                Ok(code) => code,
                Err(f) => {
                    eprintln!("dshell: {}", f.text());
                    f.code()
                }
            },
            Err(e) => {
                let _ = e.print();
                2
            }
        };
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    end_session(&me, session);
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_like_a_shell() {
        assert_eq!(words("manager lock acquire --scope db").unwrap(), ["manager", "lock", "acquire", "--scope", "db"]);
        assert_eq!(words(r#"a "b c" 'd e' f\ g ''"#).unwrap(), ["a", "b c", "d e", "f g", ""]);
        assert!(words("a \"b").is_err());
    }

    #[test]
    fn completion_follows_the_command_tree() {
        assert_eq!(candidates(&["manager", "lock"]), &["acquire", "status", "release", "list", "run"]);
        assert!(candidates(&["manager", "lock", "acquire"]).contains(&"--scope"));
    }
}
