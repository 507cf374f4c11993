//! Soak: secretsfs mounted against moto through the fault-injecting proxy,
//! read by many threads and written by a few for minutes, under light chaos
//! with a full outage in the middle. Reports reads served, errors by errno,
//! stale serves, versions created against closes that reported success
//! (which must match), read latency in and out of the outage, the proxy's
//! peak of calls in flight, the daemon's RSS and API calls by operation, as a
//! table and then one JSON line (the last line of the output).
//!
//! Run: `cargo bench --bench soak -- --soak --minutes 10` (as root, with
//! /dev/fuse and moto as for the tests; see tests/common). Options, with
//! their defaults: --minutes 10 (fractions allowed), --secrets 50,
//! --readers 16, --writers 2, --ttl 2. Without `--soak` (`cargo test
//! --all-targets`, a plain `cargo bench`) it does nothing and exits 0.
//! Exits 1 when versions created and successful closes differ, when a read
//! returned a value that was never written, or when the daemon died.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::proxy::Chaos;
use common::{Mount, Proxy};

const USAGE: &str = "usage: cargo bench --bench soak -- --soak [--minutes 10] [--secrets 50] \
                     [--readers 16] [--writers 2] [--ttl 2]";

/// Light chaos for the whole run.
const CHAOS: Chaos = Chaos {
    delay_ms_max: 400,
    p_delay: 0.10,
    p_500: 0.02,
    p_throttle: 0.02,
    p_drop: 0.01,
};

/// The outage of a run of 5 minutes or more; shorter runs get 20% of theirs.
const OUTAGE: Duration = Duration::from_secs(60);

/// After the writers stop, before versions are counted: a put the proxy
/// still delays (400 ms at most) reaches moto in this time.
const SETTLE: Duration = Duration::from_secs(2);

/// The operations whose requests are counted at the proxy.
const API_OPS: [&str; 5] = [
    "GetSecretValue",
    "DescribeSecret",
    "PutSecretValue",
    "ListSecretVersionIds",
    "ListSecrets",
];

#[derive(Debug)]
struct Params {
    minutes: f64,
    secrets: usize,
    readers: usize,
    writers: usize,
    ttl: u64,
}

impl Params {
    /// None without `--soak`. `--bench` is what `cargo bench` adds.
    fn parse(args: &[String]) -> Result<Option<Params>, String> {
        if !args.iter().any(|a| a == "--soak") {
            return Ok(None);
        }
        let mut p = Params {
            minutes: 10.0,
            secrets: 50,
            readers: 16,
            writers: 2,
            ttl: 2,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--soak" || a == "--bench" {
                continue;
            }
            let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
            let bad = || format!("{a} {v}: not a valid number");
            match a.as_str() {
                "--minutes" => p.minutes = v.parse().map_err(|_| bad())?,
                "--secrets" => p.secrets = v.parse().map_err(|_| bad())?,
                "--readers" => p.readers = v.parse().map_err(|_| bad())?,
                "--writers" => p.writers = v.parse().map_err(|_| bad())?,
                "--ttl" => p.ttl = v.parse().map_err(|_| bad())?,
                _ => return Err(format!("unknown argument {a}")),
            }
        }
        if !(p.minutes > 0.0 && p.minutes.is_finite()) {
            return Err("--minutes must be more than 0".into());
        }
        if p.secrets == 0 || p.readers == 0 || p.ttl == 0 {
            return Err("--secrets, --readers and --ttl must be at least 1".into());
        }
        Ok(Some(p))
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.minutes * 60.0)
    }

    /// When the outage starts and how long it lasts: centred in the run.
    fn outage(&self) -> (Duration, Duration) {
        let d = self.duration();
        let len = if d >= Duration::from_secs(300) {
            OUTAGE
        } else {
            d.mul_f64(0.2)
        };
        ((d - len) / 2, len)
    }

    fn cargo_command(&self) -> String {
        format!(
            "cargo bench --bench soak -- --soak --minutes {} --secrets {} --readers {} --writers {} --ttl {}",
            self.minutes, self.secrets, self.readers, self.writers, self.ttl
        )
    }
}

/// Latencies in nanoseconds in log-linear buckets (64 per power of two, so a
/// quantile is within 1.6%) plus the exact maximum: millions of reads fit in
/// a few KiB per thread.
#[derive(Clone)]
struct Hist {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

impl Default for Hist {
    fn default() -> Self {
        Hist {
            buckets: vec![0; ((64 - SUB_BITS + 1) as usize) << SUB_BITS],
            count: 0,
            max: 0,
        }
    }
}

impl Hist {
    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // at least SUB_BITS
        ((u64::from(e - SUB_BITS + 1) << SUB_BITS) | ((v >> (e - SUB_BITS)) & (SUB - 1))) as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let shift = (i >> SUB_BITS) - 1;
        ((SUB + (i & (SUB - 1))) << shift) + (1 << shift) / 2
    }

    fn record(&mut self, ns: u64) {
        self.buckets[Self::index(ns)] += 1;
        self.count += 1;
        self.max = self.max.max(ns);
    }

    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.count += o.count;
        self.max = self.max.max(o.max);
    }

    fn quantile(&self, q: f64) -> Option<u64> {
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::value(i).min(self.max));
            }
        }
        None
    }

    /// p50, p99 and max in milliseconds (null when empty).
    fn summary(&self) -> serde_json::Value {
        let ms = |ns: Option<u64>| ns.map(|n| (n as f64 / 1e6 * 1000.0).round() / 1000.0);
        serde_json::json!({
            "count": self.count,
            "p50_ms": ms(self.quantile(0.50)),
            "p99_ms": ms(self.quantile(0.99)),
            "max_ms": ms((self.count > 0).then_some(self.max)),
        })
    }

    fn describe(&self) -> String {
        if self.count == 0 {
            return "-".into();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} ops)",
            ms(self.quantile(0.5).unwrap()),
            ms(self.quantile(0.99).unwrap()),
            ms(self.max),
            self.count
        )
    }
}

/// Outcomes of one thread (or of all, merged), indexed by phase: 0 outside
/// the outage, 1 started during it.
#[derive(Default)]
struct Tally {
    lat: [Hist; 2],
    ok: [u64; 2],
    errors: BTreeMap<String, [u64; 2]>,
}

impl Tally {
    fn error(&mut self, phase: usize, kind: String) {
        self.errors.entry(kind).or_default()[phase] += 1;
    }

    fn merge(mut self, o: Tally) -> Tally {
        for p in 0..2 {
            self.lat[p].merge(&o.lat[p]);
            self.ok[p] += o.ok[p];
        }
        for (k, v) in o.errors {
            let e = self.errors.entry(k).or_default();
            e[0] += v[0];
            e[1] += v[1];
        }
        self
    }

    fn overall(&self) -> Hist {
        let mut h = self.lat[0].clone();
        h.merge(&self.lat[1]);
        h
    }

    fn errors_in(&self, phases: &[usize]) -> BTreeMap<String, u64> {
        self.errors
            .iter()
            .map(|(k, v)| (k.clone(), phases.iter().map(|p| v[*p]).sum()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn attempts(&self) -> u64 {
        self.lat[0].count + self.lat[1].count
    }
}

fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EINVAL => "EINVAL",
        libc::EINTR => "EINTR",
        libc::EAGAIN => "EAGAIN",
        libc::EBUSY => "EBUSY",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ENOSPC => "ENOSPC",
        libc::EDQUOT => "EDQUOT",
        libc::EFBIG => "EFBIG",
        libc::EROFS => "EROFS",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENODEV => "ENODEV",
        libc::ECONNABORTED => "ECONNABORTED",
        _ => return format!("errno {errno}"),
    };
    name.into()
}

/// What the threads share: the phase, the stop flag, running totals for the
/// progress lines, and per secret the values written and successful closes.
struct Shared {
    t0: Instant,
    paths: Vec<PathBuf>,
    /// Every value of secret i starts with `prefixes[i]`.
    prefixes: Vec<String>,
    /// Every value secret i may hold: the initial one and each written (added
    /// before its write starts). A read of anything else is a bad value.
    known: Vec<RwLock<HashSet<Vec<u8>>>>,
    /// Per secret, milliseconds from the start to the start of the write in
    /// flight (0: none) and to the end of the last successful one (0: none),
    /// to place bad reads in time.
    write_started_ms: Vec<AtomicU64>,
    last_write_ms: Vec<AtomicU64>,
    /// Per secret, reads that failed or returned a bad value.
    read_errors_by_secret: Vec<AtomicU64>,
    /// The first bad reads, described without their content.
    bad_reads: Mutex<Vec<String>>,
    stop: AtomicBool,
    outage: AtomicBool,
    reads: AtomicU64,
    read_errors: AtomicU64,
    writes_ok: AtomicU64,
    writes_failed: AtomicU64,
    written: Vec<AtomicU64>,
}

/// A value for secret `i`: its prefix, then something unique.
fn prefix(i: usize) -> String {
    format!("soak:{i}:")
}

/// How many bad reads are described in the report.
const BAD_READS_SHOWN: usize = 20;

impl Shared {
    fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// Classifies a read of secret `i` that is none of its values, and notes
    /// the first ones with their timing (never their content).
    fn bad_value(&self, i: usize, v: &[u8]) -> String {
        let kind = {
            let known = self.known[i].read().unwrap();
            if v.is_empty() {
                "empty"
            } else if v.iter().all(|b| *b == 0) {
                "zeros"
            } else if known.iter().any(|k| k.starts_with(v)) {
                "truncated"
            } else if known.iter().any(|k| v.starts_with(k)) {
                "extended"
            } else if v.starts_with(self.prefixes[i].as_bytes()) {
                "unknown"
            } else if v.starts_with(b"soak:") {
                "other-secret"
            } else {
                "garbled"
            }
        };
        let mut shown = self.bad_reads.lock().unwrap();
        if shown.len() < BAD_READS_SHOWN {
            let now = self.ms();
            let started = self.write_started_ms[i].load(Relaxed);
            let last = self.last_write_ms[i].load(Relaxed);
            let lens: BTreeSet<usize> =
                self.known[i].read().unwrap().iter().map(Vec::len).collect();
            let writes = match (started, last) {
                (0, 0) => "no write to it in flight, none succeeded yet".to_string(),
                (0, l) => format!(
                    "no write to it in flight, the last ended {} ms before",
                    now.saturating_sub(l)
                ),
                (s, _) => format!("a write to it in flight for {} ms", now.saturating_sub(s)),
            };
            shown.push(format!(
                "at {:.3} s, s{i:03}: {kind}, {} bytes (its values have {lens:?} bytes); {writes}",
                now as f64 / 1e3,
                v.len(),
            ));
        }
        format!("BADVALUE:{kind}")
    }
}

fn reader(sh: &Shared, seed: u64) -> Tally {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut t = Tally::default();
    while !sh.stop.load(Relaxed) {
        let i = rng.usize(..sh.paths.len());
        let phase = usize::from(sh.outage.load(Relaxed));
        let t0 = Instant::now();
        let r = std::fs::read(&sh.paths[i]);
        t.lat[phase].record(t0.elapsed().as_nanos() as u64);
        sh.reads.fetch_add(1, Relaxed);
        let kind = match r {
            Ok(v) if sh.known[i].read().unwrap().contains(&v) => {
                t.ok[phase] += 1;
                continue;
            }
            Ok(v) => sh.bad_value(i, &v),
            Err(e) => e.raw_os_error().map_or("other".into(), errno_name),
        };
        t.error(phase, kind);
        sh.read_errors.fetch_add(1, Relaxed);
        sh.read_errors_by_secret[i].fetch_add(1, Relaxed);
    }
    t
}

/// Every 1-3 s, replaces `current` of a random secret with a unique value.
fn writer(sh: &Shared, w: usize, seed: u64) -> Tally {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut t = Tally::default();
    for seq in 1.. {
        let until = Instant::now() + Duration::from_millis(rng.u64(1000..=3000));
        while Instant::now() < until {
            if sh.stop.load(Relaxed) {
                return t;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let i = rng.usize(..sh.paths.len());
        let value = format!(
            "{}w{w}-{seq}-{}",
            sh.prefixes[i],
            uuid::Uuid::new_v4().simple()
        );
        // Known before it can be read (and kept if the write fails: its
        // put may still have happened).
        sh.known[i]
            .write()
            .unwrap()
            .insert(value.as_bytes().to_vec());
        let phase = usize::from(sh.outage.load(Relaxed));
        let t0 = Instant::now();
        sh.write_started_ms[i].store(sh.ms().max(1), Relaxed);
        let r = common::replace_file(&sh.paths[i], value.as_bytes());
        sh.write_started_ms[i].store(0, Relaxed);
        t.lat[phase].record(t0.elapsed().as_nanos() as u64);
        match r {
            Ok(()) => {
                t.ok[phase] += 1;
                sh.last_write_ms[i].store(sh.ms().max(1), Relaxed);
                sh.written[i].fetch_add(1, Relaxed);
                sh.writes_ok.fetch_add(1, Relaxed);
            }
            Err(errno) => {
                t.error(phase, errno_name(errno));
                sh.writes_failed.fetch_add(1, Relaxed);
            }
        }
    }
    t
}

/// The daemon's resident memory; None once it is gone (a zombie has none).
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
}

/// What the timed part produced.
struct Run {
    reads: Tally,
    writes: Tally,
    elapsed: Duration,
    /// The outage as it happened, in seconds from the start.
    outage: (f64, f64),
}

/// Runs the readers and writers for the whole duration, turning the outage
/// on and off in the middle and printing a progress line now and then.
fn drive(p: &Params, proxy: &Proxy, sh: &Arc<Shared>) -> Run {
    let spawn = |name: String, f: Box<dyn FnOnce() -> Tally + Send>| {
        std::thread::Builder::new().name(name).spawn(f).unwrap()
    };
    let base = fastrand::u64(..);
    let readers: Vec<_> = (0..p.readers)
        .map(|r| {
            let sh = sh.clone();
            spawn(
                format!("reader{r}"),
                Box::new(move || reader(&sh, base ^ r as u64)),
            )
        })
        .collect();
    let writers: Vec<_> = (0..p.writers)
        .map(|w| {
            let sh = sh.clone();
            let seed = base ^ ((w as u64 + 1) << 32);
            spawn(format!("writer{w}"), Box::new(move || writer(&sh, w, seed)))
        })
        .collect();

    let (outage_at, outage_len) = p.outage();
    let every = (p.duration() / 6).min(Duration::from_secs(30));
    let t0 = sh.t0;
    let mut next_progress = every;
    let (mut began, mut ended) = (None, None);
    while t0.elapsed() < p.duration() {
        let now = t0.elapsed();
        if began.is_none() && now >= outage_at {
            proxy.outage(true);
            sh.outage.store(true, Relaxed);
            began = Some(now);
            println!(
                "[{:>6.1}s] outage begins: every API call answered 503 for {:.1} s",
                now.as_secs_f64(),
                outage_len.as_secs_f64()
            );
        }
        if began.is_some() && ended.is_none() && now >= outage_at + outage_len {
            proxy.outage(false);
            sh.outage.store(false, Relaxed);
            ended = Some(now);
            println!("[{:>6.1}s] outage ends", now.as_secs_f64());
        }
        if now >= next_progress {
            next_progress += every;
            println!(
                "[{:>6.1}s] reads {} ({} errors), writes {} ok / {} failed",
                now.as_secs_f64(),
                sh.reads.load(Relaxed),
                sh.read_errors.load(Relaxed),
                sh.writes_ok.load(Relaxed),
                sh.writes_failed.load(Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    sh.stop.store(true, Relaxed);
    let elapsed = t0.elapsed();
    let join = |hs: Vec<std::thread::JoinHandle<Tally>>| {
        hs.into_iter()
            .map(|h| h.join().expect("soak thread panicked"))
            .fold(Tally::default(), Tally::merge)
    };
    let reads = join(readers);
    let writes = join(writers);
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    Run {
        reads,
        writes,
        elapsed,
        outage: (secs(began), secs(ended)),
    }
}

fn mount_all(proxy: &Proxy, names: &[String], ttl: u64) -> Mount {
    let mut b = Mount::aws()
        .endpoint(proxy.url())
        .args(["--ttl".to_string(), ttl.to_string()]);
    for n in names {
        b = b.args(["--secret", n.as_str()]);
    }
    b.start()
}

/// How many secrets had read errors, and the three with the most.
fn by_secret(sh: &Shared) -> String {
    let mut v: Vec<(u64, usize)> = sh
        .read_errors_by_secret
        .iter()
        .enumerate()
        .map(|(i, n)| (n.load(Relaxed), i))
        .filter(|(n, _)| *n > 0)
        .collect();
    if v.is_empty() {
        return "none".into();
    }
    v.sort_unstable_by(|a, b| b.cmp(a));
    let top: Vec<String> = v
        .iter()
        .take(3)
        .map(|(n, i)| format!("s{i:03} {n}"))
        .collect();
    format!("{} secrets (most: {})", v.len(), top.join(", "))
}

/// Copies the daemon's log (names, never values) out of the mount's temporary
/// directory, which goes with the mount.
fn keep_log(tag: &str, log: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/soak");
    let path = dir.join(format!("{tag}-daemon.log"));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, log)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("nowhere ({}: {e})", path.display()),
    }
}

/// Per secret, versions created since the start (moto lists every version,
/// so all but the initial one) against the closes that reported success.
fn versions(names: &[String], sh: &Shared) -> (u64, u64, Vec<String>) {
    let (mut created, mut closed, mut differ) = (0, 0, Vec::new());
    for (i, n) in names.iter().enumerate() {
        let c = common::version_ids(n).len().saturating_sub(1) as u64;
        let w = sh.written[i].load(Relaxed);
        if c != w {
            differ.push(format!("{n}: {c} versions, {w} closes"));
        }
        created += c;
        closed += w;
    }
    (created, closed, differ)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test -- --list` and friends: nothing to list
    }
    let params = match Params::parse(&args[1..]) {
        Ok(Some(p)) => p,
        Ok(None) => {
            println!("soak: not run without --soak ({USAGE})");
            return;
        }
        Err(e) => {
            eprintln!("soak: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // The guards (mount, proxy) are dropped inside `run`, before exit.
    if !run(&args, &params) {
        std::process::exit(1);
    }
}

/// The whole soak; false when it failed.
fn run(args: &[String], p: &Params) -> bool {
    let (outage_at, outage_len) = p.outage();
    println!("secretsfs soak");
    println!("command: {}", args.join(" "));
    println!("  (as: {})", p.cargo_command());
    println!(
        "parameters: {:.2} min, {} secrets, {} readers, {} writers, --ttl {}; \
         chaos {:?}; outage of {:.1} s from {:.1} s",
        p.minutes,
        p.secrets,
        p.readers,
        p.writers,
        p.ttl,
        CHAOS,
        outage_len.as_secs_f64(),
        outage_at.as_secs_f64()
    );

    let tag = common::unique("soak");
    let names: Vec<String> = (0..p.secrets).map(|i| format!("{tag}/s{i:03}")).collect();
    let initial: Vec<String> = (0..p.secrets)
        .map(|i| format!("{}initial-{}", prefix(i), uuid::Uuid::new_v4()))
        .collect();
    for (n, v) in names.iter().zip(&initial) {
        common::create(n, v);
    }
    let proxy = Proxy::start();
    let mount = mount_all(&proxy, &names, p.ttl);
    println!(
        "mounted {} secrets under {tag}/ at {} (daemon pid {})\n",
        names.len(),
        mount.path.display(),
        mount.pid()
    );
    let rss_start = rss_kib(mount.pid());
    proxy.chaos(CHAOS);
    let sh = Arc::new(Shared {
        t0: Instant::now(),
        known: initial
            .iter()
            .map(|v| RwLock::new(HashSet::from([v.as_bytes().to_vec()])))
            .collect(),
        write_started_ms: names.iter().map(|_| AtomicU64::new(0)).collect(),
        last_write_ms: names.iter().map(|_| AtomicU64::new(0)).collect(),
        read_errors_by_secret: names.iter().map(|_| AtomicU64::new(0)).collect(),
        bad_reads: Mutex::new(Vec::new()),
        paths: names
            .iter()
            .map(|n| mount.path.join(n).join("current"))
            .collect(),
        prefixes: (0..names.len()).map(prefix).collect(),
        stop: AtomicBool::new(false),
        outage: AtomicBool::new(false),
        reads: AtomicU64::new(0),
        read_errors: AtomicU64::new(0),
        writes_ok: AtomicU64::new(0),
        writes_failed: AtomicU64::new(0),
        written: names.iter().map(|_| AtomicU64::new(0)).collect(),
    });

    let out = drive(p, &proxy, &sh);
    std::thread::sleep(SETTLE);
    proxy.chaos(Chaos::default());

    let rss_end = rss_kib(mount.pid());
    let alive = rss_end.is_some() && mount.is_mounted();
    let stats: serde_json::Value = mount
        .read(".secretsfs/stats")
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let log = mount.log_text();
    let log_lines = |level: &str| log.lines().filter(|l| l.contains(level)).count();
    let (created, closed, differ) = versions(&names, &sh);
    let api: BTreeMap<&str, usize> = API_OPS.iter().map(|op| (*op, proxy.count(op))).collect();
    let inj = proxy.injected();

    let r = &out.reads;
    let w = &out.writes;
    let bad_values: u64 = r
        .errors
        .iter()
        .filter(|(k, _)| k.starts_with("BADVALUE"))
        .map(|(_, v)| v[0] + v[1])
        .sum();
    let mut failures = Vec::new();
    if created != closed {
        failures.push(format!(
            "MISMATCH: {created} versions created, {closed} closes reported success"
        ));
    }
    if bad_values > 0 {
        failures.push(format!("{bad_values} reads returned a value never written"));
    }
    if !alive {
        failures.push("the daemon is no longer running and mounted".into());
    }
    let mib = |k: Option<u64>| k.map_or("gone".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let kinds = |m: BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };

    let served = r.ok[0] + r.ok[1];
    let rows: Vec<(&str, String)> = vec![
        ("run time", format!("{:.1} s", out.elapsed.as_secs_f64())),
        (
            "outage (all calls 503)",
            format!("{:.1} s to {:.1} s", out.outage.0, out.outage.1),
        ),
        (
            "reads served / attempted",
            format!(
                "{served} / {} ({:.0} per second)",
                r.attempts(),
                served as f64 / out.elapsed.as_secs_f64()
            ),
        ),
        (
            "reads served during the outage",
            format!("{} / {}", r.ok[1], r.lat[1].count),
        ),
        ("read errors by kind", kinds(r.errors_in(&[0, 1]))),
        ("read errors during the outage", kinds(r.errors_in(&[1]))),
        ("read errors by secret", by_secret(&sh)),
        (
            "stale serves (daemon)",
            format!(
                "{}, oldest {} s",
                stats["stale_served"], stats["stale_max_age_secs"]
            ),
        ),
        ("read latency, overall", r.overall().describe()),
        ("read latency, outside the outage", r.lat[0].describe()),
        ("read latency, during the outage", r.lat[1].describe()),
        (
            "writes: closes that reported success / attempted",
            format!(
                "{closed} / {} (during the outage {} / {})",
                w.attempts(),
                w.ok[1],
                w.lat[1].count
            ),
        ),
        ("write errors by kind", kinds(w.errors_in(&[0, 1]))),
        ("write latency (open to close)", w.overall().describe()),
        (
            "versions created (ListSecretVersionIds)",
            format!(
                "{created} vs {closed} successful closes: {}",
                if created == closed {
                    "equal"
                } else {
                    "MISMATCH"
                }
            ),
        ),
        (
            "peak calls in flight at the proxy",
            proxy.peak().to_string(),
        ),
        (
            "daemon RSS start / end",
            format!("{} / {}", mib(rss_start), mib(rss_end)),
        ),
        (
            "faults injected",
            format!(
                "503 (outage) {}, 500 {}, throttles {}, drops {}, delays {}",
                inj.outage_503, inj.e500, inj.throttles, inj.drops, inj.delays
            ),
        ),
        (
            "daemon log",
            format!(
                "{} WARN lines, {} ERROR lines, {} bytes",
                log_lines("WARN"),
                log_lines("ERROR"),
                log.len()
            ),
        ),
    ];
    println!("\n| measure | value |");
    println!("| --- | --- |");
    for (k, v) in &rows {
        println!("| {k} | {v} |");
    }
    println!(
        "\n| API operation | requests at the proxy (retries and faults included) | calls counted by the daemon |"
    );
    println!("| --- | --- | --- |");
    for (op, n) in &api {
        println!("| {op} | {n} | {} |", stats["api_calls"][op]);
    }
    println!();
    for d in differ.iter().take(10) {
        println!("MISMATCH {d}");
    }
    for b in sh.bad_reads.lock().unwrap().iter() {
        println!("bad read {b}");
    }
    println!("daemon log kept at {}", keep_log(&tag, &log));
    for f in &failures {
        println!("!!!!!!!! SOAK FAILED: {f} !!!!!!!!");
    }
    if failures.is_empty() {
        println!("soak passed");
    }

    let json = serde_json::json!({
        "command": args.join(" "),
        "params": {
            "minutes": p.minutes, "secrets": p.secrets, "readers": p.readers,
            "writers": p.writers, "ttl": p.ttl,
            "chaos": {
                "delay_ms_max": CHAOS.delay_ms_max, "p_delay": CHAOS.p_delay,
                "p_500": CHAOS.p_500, "p_throttle": CHAOS.p_throttle, "p_drop": CHAOS.p_drop,
            },
            "outage_start_s": outage_at.as_secs_f64(), "outage_len_s": outage_len.as_secs_f64(),
        },
        "elapsed_s": out.elapsed.as_secs_f64(),
        "outage_s": [out.outage.0, out.outage.1],
        "reads": {
            "attempted": r.attempts(), "served": served,
            "served_outage": r.ok[1], "attempted_outage": r.lat[1].count,
            "errors": r.errors_in(&[0, 1]), "errors_outage": r.errors_in(&[1]),
            "bad_values": bad_values,
        },
        "stale_served": stats["stale_served"],
        "stale_max_age_secs": stats["stale_max_age_secs"],
        "latency": {
            "overall": r.overall().summary(),
            "outside_outage": r.lat[0].summary(),
            "outage": r.lat[1].summary(),
            "write": w.overall().summary(),
        },
        "writes": {
            "attempted": w.attempts(), "closes_ok": closed,
            "closes_ok_outage": w.ok[1], "errors": w.errors_in(&[0, 1]),
        },
        "versions_created": created,
        "versions_match": created == closed,
        "proxy_peak_in_flight": proxy.peak(),
        "rss_kib": { "start": rss_start, "end": rss_end },
        "api_calls_proxy": api,
        "api_calls_daemon": stats["api_calls"],
        "api_errors_daemon": stats["api_errors"],
        "injected": {
            "outage_503": inj.outage_503, "e500": inj.e500, "throttles": inj.throttles,
            "drops": inj.drops, "delays": inj.delays,
        },
        "daemon_alive": alive,
        "failures": failures,
    });
    println!("{json}");
    failures.is_empty()
}
