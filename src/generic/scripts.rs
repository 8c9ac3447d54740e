//! The constant shell scripts the generic sandbox runs; every datum reaches them as an argv
//! entry or as stdin bytes, never pasted into the script text.
//!
//! Distinct exit codes report error classes back to Rust (see `super::classify`).

/// Exit code: the path (or process) does not exist.
pub const EC_NOT_FOUND: i32 = 200;
/// Exit code: the path is a directory where a file is needed.
pub const EC_IS_DIR: i32 = 201;
/// Exit code: the path is not a directory where one is needed.
pub const EC_NOT_DIR: i32 = 202;
/// Exit code: permission denied.
pub const EC_PERMISSION: i32 = 203;
/// Exit code: a command is still running in the session.
pub const EC_BUSY: i32 = 204;
/// Exit code: no command is running.
pub const EC_NOT_RUNNING: i32 = 205;
/// Exit code: a tool failed; stderr tells why.
pub const EC_TOOL: i32 = 206;

/// A shell function `__alive PID`: true when the process exists and is not a zombie.
macro_rules! alive_fn {
    () => {
        r#"__alive() {
  [ -e "/proc/$1" ] || return 1
  __st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  __st=${__st##*')' }
  case $__st in Z*|X*|'') return 1;; esac
  return 0
}
"#
    };
}

/// Runs the stateful wrapper (argv from `shell::wrap` after the 4 leading parameters) with its
/// stdout spooled to a file, re-emits that stdout (capped so the state dump at its end always
/// survives), and persists the dump (the last `$4` bytes, behind a marker line) as the
/// session's state file, all in the same engine exec.
///
/// $1 state file, $2 marker, $3 output limit in bytes, $4 dump tail size in bytes, $5 the
/// local directory the output is spooled in (never a bucket volume: the spool is scratch).
pub const STATEFUL_OUTER: &str = r#"__o_sf=$1; __o_m=$2; __o_lim=$3; __o_tl=$4; __o_sp=$5
shift 5
__o_d=${__o_sf%/*}
[ -d "$__o_d" ] || mkdir -p "$__o_d" || exit 206
[ -d "$__o_sp" ] || mkdir -p "$__o_sp" || exit 206
__o_out=$__o_sp/stdout.$$
"$@" > "$__o_out"
__o_rc=$?
__o_n=$(wc -c < "$__o_out")
if [ "$__o_n" -le "$__o_lim" ]; then
  cat "$__o_out"
else
  head -c "$__o_lim" "$__o_out"
  printf '%sTRUNCATED %s\n' "$__o_m" "$__o_n"
  tail -c "$__o_tl" "$__o_out"
fi
{ printf '%s\n' "$__o_m"; tail -c "$__o_tl" "$__o_out"; } > "$__o_sf.tmp.$$" && mv -f "$__o_sf.tmp.$$" "$__o_sf"
rm -f "$__o_out" "$__o_sf.tmp.$$"
exit "$__o_rc"
"#;

/// Prints every persisted session state: `name\0size\n<size bytes>` per session. $1 the local
/// sessions dir, $2 its durable mirror (may be $1); a local state wins over its mirror.
pub const LOAD_SESSIONS: &str = r#"__l() {
  for __f in "$1"/*.state; do
    [ -f "$__f" ] || continue
    __n=${__f##*/}
    [ -n "$2" ] && [ -f "$2/$__n" ] && continue
    printf '%s\0' "${__n%.state}"
    wc -c < "$__f"
    cat "$__f"
  done
}
__l "$1" ""
[ "$2" != "$1" ] && __l "$2" "$1"
exit 0
"#;

/// Starts a detached background job and prints its pid. $1 bg dir (local), $2 session, $3 cwd,
/// $4 command, $5 the child script ([`BG_CHILD`]), $6 the durable bg dir (where a finished job's
/// record is kept; may be $1).
pub const BG_START: &str = r#"__b=$1
mkdir -p "$__b" || exit 206
cd -- "$3" 2>/dev/null || cd /
setsid sh -c "$5" sh "$__b" "$4" "$6" </dev/null >/dev/null 2>&1 &
__p=$!
rm -rf "$__b/$__p"
# A record a previous worker left under the same pid belongs to another job.
if [ "$6" != "$__b" ] && [ -e "$6/$__p" ]; then rm -rf "$6/$__p"; fi
mkdir "$__b/$__p" || exit 206
printf '%s' "$4" > "$__b/$__p/cmd"
printf '%s' "$2" > "$__b/$__p/session"
: > "$__b/$__p/log"
date -u +%s > "$__b/$__p/started"
echo "$__p"
"#;

/// The detached side of a background job: waits for its bookkeeping, then runs the command
/// with output to the log, recording the exit status; a finished job's record (command,
/// session, log, status, start time last) is copied to the durable dir before the local
/// status lands, so a job is never seen finished while its durable record is still on the
/// way (a worker killed then would lose it). $1 bg dir, $2 command, $3 durable bg dir.
pub const BG_CHILD: &str = r#"__sh_bgd=$1/$$
__sh_dur=$3
__sh_i=0
while [ ! -f "$__sh_bgd/started" ]; do
  __sh_i=$((__sh_i+1)); [ "$__sh_i" -gt 1000 ] && exit 1; sleep 0.01
done
exec >>"$__sh_bgd/log" 2>&1 </dev/null
trap '__sh_rc=$?; trap - EXIT; echo "$__sh_rc" > "$__sh_bgd/exit.tmp"
if [ -n "$__sh_dur" ] && [ "$__sh_dur" != "$1" ]; then
  mkdir -p "$__sh_dur/$$" && for __sh_f in cmd session log exit started; do __sh_s=$__sh_f; [ "$__sh_f" = exit ] && __sh_s=exit.tmp; cp "$__sh_bgd/$__sh_s" "$__sh_dur/$$/$__sh_f" || break; done
fi
mv -f "$__sh_bgd/exit.tmp" "$__sh_bgd/exit"
exit "$__sh_rc"' EXIT
eval "$2"
"#;

/// Lists background jobs: `pid\0running\0started\0session\0command\0` each: the jobs of
/// this worker ($1, the local bg dir), then finished jobs of earlier workers kept in the
/// durable dir ($2; may be $1).
pub const BG_LIST: &str = concat!(
    alive_fn!(),
    r#"for __d in "$1"/*/; do
  [ -f "${__d}started" ] || continue
  __p=${__d%/}; __p=${__p##*/}
  __r=0
  if [ ! -f "${__d}exit" ] && __alive "$__p"; then __r=1; fi
  read -r __t < "${__d}started"
  printf '%s\0%s\0%s\0' "$__p" "$__r" "$__t"
  cat "${__d}session"; printf '\0'
  cat "${__d}cmd"; printf '\0'
done
if [ "$2" != "$1" ]; then
  for __d in "$2"/*/; do
    [ -f "${__d}started" ] || continue
    __p=${__d%/}; __p=${__p##*/}
    [ -e "$1/$__p" ] && continue
    read -r __t < "${__d}started"
    printf '%s\0%s\0%s\0' "$__p" 0 "$__t"
    cat "${__d}session"; printf '\0'
    cat "${__d}cmd"; printf '\0'
  done
fi
"#
);

/// Kills the process groups of the given pids; prints the pids that were signalled.
pub const BG_KILL: &str = r#"for __p; do
  if kill -KILL "-$__p" 2>/dev/null; then echo "$__p"; fi
done
exit 0
"#;

/// Prints a background job's log: from this worker's record ($1, local job dir), else from the
/// durable record a finished job left ($2).
pub const BG_LOG: &str = r#"if [ -f "$1/started" ]; then cat "$1/log"; exit; fi
[ -f "$2/started" ] || exit 200
cat "$2/log"
"#;

/// Starts the session's interactive command and waits a bounded time for it.
/// $1 session dir, $2 exec dir, $3 command, $4 polls of 50 ms, $5 child script.
/// Prints `C<exit>\n<output>` or `R<pid>\n`.
pub const INTERACTIVE_START: &str = concat!(
    alive_fn!(),
    r#"__d=$1
mkdir -p "$__d" || exit 206
if [ -f "$__d/pid" ] && [ ! -f "$__d/exit" ]; then
  read -r __p < "$__d/pid"
  if __alive "$__p"; then exit 204; fi
fi
[ -e "$2" ] || exit 200
[ -d "$2" ] || exit 202
cd -- "$2" || exit 203
rm -f "$__d/in" "$__d/exit" "$__d/exit.tmp" "$__d/pid"
mkfifo "$__d/in" || exit 206
printf '%s' "$3" > "$__d/cmd"
: > "$__d/log"
setsid sh -c "$5" sh "$__d" "$3" </dev/null >/dev/null 2>&1 &
__p=$!
echo "$__p" > "$__d/pid"
__i=0
while [ ! -f "$__d/exit" ] && [ "$__i" -lt "$4" ]; do sleep 0.05; __i=$((__i+1)); done
if [ -f "$__d/exit" ]; then
  read -r __rc < "$__d/exit"; printf 'C%s\n' "$__rc"; cat "$__d/log"
else
  printf 'R%s\n' "$__p"
fi
"#
);

/// The detached interactive command: stdin from the session FIFO opened read-write (never
/// EOF), output to the log, exit status recorded. $1 session dir, $2 command.
pub const INTERACTIVE_CHILD: &str = r#"exec 3<>"$1/in"
exec <&3 >>"$1/log" 2>&1
__sh_d=$1
trap '__sh_rc=$?; trap - EXIT; echo "$__sh_rc" > "$__sh_d/exit.tmp"; mv -f "$__sh_d/exit.tmp" "$__sh_d/exit"; exit "$__sh_rc"' EXIT
eval "$2"
"#;

/// Shows the interactive command: `E<exit>|R|X\n<cmd length>\n<cmd><log>`. $1 session dir.
pub const INTERACTIVE_VIEW: &str = concat!(
    alive_fn!(),
    r#"[ -f "$1/cmd" ] || exit 200
if [ -f "$1/exit" ]; then read -r __rc < "$1/exit"; printf 'E%s\n' "$__rc"
else
  __p=; [ -f "$1/pid" ] && read -r __p < "$1/pid"
  if [ -n "$__p" ] && __alive "$__p"; then echo R; else echo X; fi
fi
wc -c < "$1/cmd"
cat "$1/cmd"
cat "$1/log"
"#
);

/// Waits for the interactive command up to $2 polls of 50 ms; prints `E<exit>`, `R` (still
/// running) or `X` (gone without a status). $1 session dir.
pub const INTERACTIVE_WAIT: &str = concat!(
    alive_fn!(),
    r#"[ -f "$1/pid" ] || exit 200
read -r __p < "$1/pid"
__i=0
while [ ! -f "$1/exit" ]; do
  if ! __alive "$__p"; then [ -f "$1/exit" ] && break; echo X; exit 0; fi
  if [ "$__i" -ge "$2" ]; then echo R; exit 0; fi
  sleep 0.05; __i=$((__i+1))
done
read -r __rc < "$1/exit"
echo "E$__rc"
"#
);

/// Appends stdin to the running interactive command's FIFO. $1 session dir.
pub const INTERACTIVE_WRITE: &str = concat!(
    alive_fn!(),
    r#"[ -f "$1/pid" ] || exit 200
read -r __p < "$1/pid"
if [ -f "$1/exit" ] || ! __alive "$__p"; then exit 205; fi
cat >> "$1/in"
"#
);

/// Kills the interactive command's process group and records status 137. $1 session dir.
pub const INTERACTIVE_KILL: &str = r#"[ -f "$1/pid" ] || exit 200
read -r __p < "$1/pid"
if [ ! -f "$1/exit" ]; then
  kill -KILL "-$__p" 2>/dev/null
  echo 137 > "$1/exit.k" && mv -f "$1/exit.k" "$1/exit"
fi
exit 0
"#;

/// Writes stdin to a file: atomically (temp file + mv, mode kept) or appending.
/// $1 path, $2 `1` to append. Works from the parent directory, so each later step looks up one
/// name instead of walking the whole path again (on a Cloud Storage volume every lookup is a
/// Storage API round trip).
pub const FILE_WRITE: &str = r#"__t=$1
if [ -L "$__t" ]; then __t=$(readlink -f -- "$__t") || exit 200; fi
__p=${__t%/*}; [ -n "$__p" ] || __p=/
__n=${__t##*/}
cd -- "$__p" 2>/dev/null || { mkdir -p -- "$__p" && cd -- "$__p"; } || exit 206
[ -d "$__n" ] && exit 201
if [ "$2" = 1 ]; then
  # A failed append (disk full, quota) is rolled back to the old size: no half-appended data.
  __s=; [ -e "$__n" ] && { __s=$(stat -c %s -- "$__n") || exit 206; }
  cat >> "$__n" && exit 0
  if [ -n "$__s" ]; then truncate -s "$__s" -- "$__n"; else rm -f -- "$__n"; fi
  exit 206
fi
__m=644
if [ -e "$__n" ]; then __m=$(stat -c %a -- "$__n") || exit 206; fi
__tmp=$(mktemp ./.sandbox-harness-w.XXXXXX) || exit 206
if cat > "$__tmp" && chmod "$__m" "$__tmp" && mv -f -- "$__tmp" "$__n"; then exit 0; fi
rm -f -- "$__tmp"
exit 206
"#;

/// Exit 0 when the path exists (file, directory or link, dangling or not: an lstat), 1
/// otherwise. $1 path.
pub const FILE_EXISTS: &str = r#"stat -- "$1" >/dev/null 2>&1 || exit 1
"#;

/// Deletes a file or a directory tree. $1 path.
pub const FILE_DELETE: &str = r#"stat -- "$1" >/dev/null 2>&1 || exit 200
rm -rf -- "$1" || exit 206
"#;

/// Lists a directory: per entry `<type>/<size>/<mtime>\n<name>\0`. $1 path.
pub const FILE_LIST: &str = r#"cd -- "$1" 2>/dev/null || {
  [ -e "$1" ] || exit 200
  [ -d "$1" ] || exit 202
  exit 203
}
for __f in .* *; do
  case $__f in .|..) continue;; esac
  # One lstat per entry (an unmatched glob or a vanished entry fails it): on a Cloud Storage
  # volume every test of a name is a lookup through the Storage API.
  __s=$(stat -c '%F/%s/%Y' -- "$__f" 2>/dev/null) || continue
  printf '%s\n%s\0' "$__s" "$__f"
done
"#;

/// Prints every path below a directory, NUL-separated. $1 dir.
pub const FILE_FIND: &str = r#"[ -e "$1" ] || exit 200
[ -d "$1" ] || exit 202
find "$1" -mindepth 1 -print0
"#;

/// Prints the octal mode of a regular file. $1 path.
pub const FILE_MODE: &str = r#"[ -e "$1" ] || exit 200
[ -d "$1" ] && exit 201
stat -L -c %a -- "$1"
"#;

/// Sets a file's mode. $1 path, $2 octal mode.
pub const FILE_CHMOD: &str = r#"chmod "$2" "$1"
"#;

/// Creates the parent directory of an upload target and rejects a directory target.
/// $1 parent, $2 target.
pub const UPLOAD_PREPARE: &str = r#"[ -d "$2" ] && exit 201
mkdir -p -- "$1" || exit 206
"#;
