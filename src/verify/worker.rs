//! The workers of `pgarc verify`: read what the planner left (frames of pgarc data files,
//! whole files), on N threads, largest first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::archive::reader::{read_whole, CountSink, FrameCheckError};

use super::plan::{Problem, Unit};

/// At most this many problems are reported per file; the rest are counted.
const MAX_PER_FILE: usize = 10;

/// What the workers found and how much they read.
#[derive(Debug, Default)]
pub struct Found {
    pub problems: Vec<Problem>,
    pub bytes: u64,
    pub frames: u64,
    pub rows: u64,
}

/// Runs every unit on `jobs` threads.
pub fn run(mut units: Vec<Unit>, jobs: usize) -> Found {
    units.sort_by_key(|u| std::cmp::Reverse(u.weight()));
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Found::default());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(units.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(unit) = units.get(i) else { break };
                let mut mine = Found::default();
                check(unit, &mut mine);
                let mut all = found.lock().expect("not poisoned");
                all.problems.append(&mut mine.problems);
                all.bytes += mine.bytes;
                all.frames += mine.frames;
                all.rows += mine.rows;
            });
        }
    });
    found.into_inner().expect("not poisoned")
}

fn check(unit: &Unit, out: &mut Found) {
    match unit {
        Unit::Frames { data, range, table } => {
            let problem = |frame: Option<(usize, u64, u64)>, what: String| Problem {
                file: data.file.rel.clone(),
                frame,
                table: Some(table.clone()),
                what,
            };
            let index = data.frames().map_or(&[][..], |i| &i[..]);
            let size_ok = data.size_ok;
            let mut reader = match data.frame_reader(range.clone()) {
                Ok(r) => r.checking_digests(),
                Err(e) => {
                    out.problems.push(problem(None, e.to_string()));
                    return;
                }
            };
            let first = out.problems.len();
            loop {
                match reader.next_frame(&mut CountSink::default()) {
                    Ok(None) => break,
                    Ok(Some(frame)) => {
                        out.frames += 1;
                        out.bytes += index[frame.number - 1].stored;
                        out.rows += frame.rows;
                    }
                    Err(FrameCheckError::Bad {
                        frame,
                        offset,
                        end,
                        problem: what,
                        truncated,
                        ..
                    }) => {
                        // Past the end of a truncated file every frame would say the same, and
                        // in a file of the wrong size every later frame is shifted.
                        if truncated || !size_ok {
                            let what = if truncated {
                                what
                            } else {
                                format!(
                                    "{what} (the file's size differs from the manifest: \
                                         later frames not checked)"
                                )
                            };
                            out.problems.push(problem(Some((frame, offset, end)), what));
                            break;
                        }
                        out.problems.push(problem(Some((frame, offset, end)), what));
                    }
                    Err(e @ FrameCheckError::Io { .. }) => {
                        out.problems.push(problem(None, e.to_string()));
                        break;
                    }
                }
                if out.problems.len() - first >= MAX_PER_FILE {
                    out.problems.push(problem(
                        None,
                        format!("more problems after these {MAX_PER_FILE}: not checked further"),
                    ));
                    break;
                }
            }
        }
        Unit::Whole {
            rel,
            store,
            expect,
            decode,
            table,
            ..
        } => {
            let problem = |what: String| Problem::new(rel, what).of_table(table.as_ref());
            let whole = match read_whole(store.as_ref(), rel, *decode) {
                Ok(w) => w,
                Err(e) => {
                    out.problems.push(problem(format!("could not read: {e}")));
                    return;
                }
            };
            out.bytes += whole.size;
            if let Some((size, sha)) = expect {
                if whole.size != *size {
                    out.problems.push(problem(format!(
                        "{} bytes, the manifest says {size}: the file changed while being read",
                        whole.size
                    )));
                } else if &whole.sha256 != sha {
                    out.problems.push(problem(format!(
                        "SHA-256 is {}, the manifest says {sha}: the file is damaged",
                        whole.sha256
                    )));
                }
            }
            match whole.decoded {
                Some(Ok(rows)) if matches!(decode, crate::archive::reader::Decode::Copy(_)) => {
                    out.rows += rows
                }
                Some(Err(what)) => out.problems.push(problem(what.to_string())),
                _ => {}
            }
        }
    }
}
