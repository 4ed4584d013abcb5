//! The benchmark's child processes (the release `incoming-handler run`, `fetch-api serve`):
//! started with JSON logs on stderr, watched for their "ready" line and their last stats line,
//! measured from `/proc/<pid>` (CPU time, peak RSS), stopped with SIGTERM by their pid.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::watch;

/// Lines of a child's stderr kept for error messages.
const TAIL_LINES: usize = 40;

#[derive(Debug, Default)]
struct LogState {
    tail: VecDeque<String>,
    stats: Vec<serde_json::Value>,
    /// When the ready line came, and the process's CPU seconds then.
    ready_at: Option<(Instant, f64)>,
}

/// CPU and memory of a process, from `/proc/<pid>/stat` and `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// User + system CPU time of all its threads, seconds.
    pub cpu_secs: f64,
    /// The system (kernel) part of it.
    pub system_secs: f64,
    /// Peak resident set size (VmHWM), bytes.
    pub peak_rss_bytes: u64,
}

/// A running child process.
#[derive(Debug)]
pub struct Child {
    name: String,
    child: tokio::process::Child,
    pid: u32,
    log: Arc<Mutex<LogState>>,
    ready: watch::Receiver<bool>,
}

impl Child {
    /// Starts `program args…` with `env` added and `remove` removed from this environment,
    /// stdin/stdout closed, stderr read line by line (JSON logs: `ready_message` is the
    /// `message` of the line that says it is ready). Killed if dropped while running.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        remove: &[&str],
        ready_message: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in remove {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id().context("the child has no pid")?;
        let stderr = child.stderr.take().context("the child's stderr")?;
        let log = Arc::new(Mutex::new(LogState::default()));
        let (ready_tx, ready) = watch::channel(ready_message.is_none());
        let ready_message = ready_message.map(str::to_owned);
        let state = log.clone();
        // BP_BENCH_LOG_DIR: keep every child's whole log there (diagnosis).
        let mut copy = std::env::var_os("BP_BENCH_LOG_DIR").and_then(|dir| {
            let path = Path::new(&dir).join(format!("{name}-{pid}.log"));
            std::fs::File::create(path).ok()
        });
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(f) = copy.as_mut() {
                    use std::io::Write as _;
                    let _ = writeln!(f, "{line}");
                }
                let parsed: Option<serde_json::Value> = serde_json::from_str(&line).ok();
                let message = parsed
                    .as_ref()
                    .and_then(|v| v.get("message"))
                    .and_then(|m| m.as_str())
                    .map(str::to_owned);
                let mut s = state.lock().expect("log lock");
                if message.is_some() && message == ready_message {
                    let cpu = usage(pid).map(|u| u.cpu_secs).unwrap_or(0.0);
                    s.ready_at = Some((Instant::now(), cpu));
                    let _ = ready_tx.send(true);
                }
                if message.as_deref() == Some("stats")
                    && let Some(v) = parsed
                {
                    s.stats.push(v);
                }
                if s.tail.len() == TAIL_LINES {
                    s.tail.pop_front();
                }
                s.tail.push_back(line);
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            log,
            ready,
        })
    }

    /// When it said it was ready, and its CPU seconds at that moment.
    pub fn ready_at(&self) -> Option<(Instant, f64)> {
        self.log.lock().expect("log lock").ready_at
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last lines it wrote to stderr.
    pub fn tail(&self) -> String {
        let s = self.log.lock().expect("log lock");
        s.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// The handler's press batches from its `stats` log lines (each counts since the previous
    /// one): (batches, presses in them), if it printed any.
    pub fn batch_totals(&self) -> Option<(u64, u64)> {
        let s = self.log.lock().expect("log lock");
        if s.stats.is_empty() {
            return None;
        }
        let field = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        Some(s.stats.iter().fold((0, 0), |(b, items), v| {
            let n = field(v, "batches");
            (b + n, items + n * field(v, "batch_avg"))
        }))
    }

    /// The sum of a counter over the handler's `stats` log lines (each counts since the
    /// previous one), if it printed any.
    pub fn stat_total(&self, field: &str) -> Option<u64> {
        let s = self.log.lock().expect("log lock");
        if s.stats.is_empty() {
            return None;
        }
        Some(
            s.stats
                .iter()
                .map(|v| v.get(field).and_then(|x| x.as_u64()).unwrap_or(0))
                .sum(),
        )
    }

    /// Fails (with its last log lines) when it has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited early ({status}); its last log lines:\n{}",
                self.name,
                self.tail()
            );
        }
        Ok(())
    }

    /// Waits for its ready line.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if *self.ready.borrow() {
                return Ok(());
            }
            self.check_running()?;
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} not ready within {} s; its last log lines:\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.tail()
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), self.ready.changed()).await;
        }
    }

    /// CPU time and peak RSS so far.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        usage(self.pid)
    }

    /// SIGTERM, then waits up to `timeout` for the exit (SIGKILL after that).
    pub async fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        if self.child.try_wait()?.is_none() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => {
                // Let the stderr reader take the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(status?)
            }
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                bail!(
                    "{} did not stop within {} s of SIGTERM; killed. Last log lines:\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.tail()
                )
            }
        }
    }
}

/// Busy and total jiffies of all CPUs, from the first line of `/proc/stat`.
pub fn cpu_jiffies() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_cpu_line(stat.lines().next().unwrap_or_default()).context("parsing /proc/stat")
}

/// (busy, total) of a `cpu  user nice system idle iowait irq softirq steal …` line.
pub fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// The share of the machine's CPU time (0–1) that was busy over `window`.
pub async fn busy_share(window: Duration) -> anyhow::Result<f64> {
    let (b0, t0) = cpu_jiffies()?;
    tokio::time::sleep(window).await;
    let (b1, t1) = cpu_jiffies()?;
    Ok(if t1 > t0 {
        (b1 - b0) as f64 / (t1 - t0) as f64
    } else {
        0.0
    })
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, else 100).
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU time and peak RSS of a running process.
pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let (user, system) = parse_cpu_ticks(&stat).context("parsing /proc/<pid>/stat")?;
    let hwm = parse_vm_hwm(&status).context("no VmHWM in /proc/<pid>/status")?;
    Ok(Usage {
        cpu_secs: (user + system) as f64 / clock_ticks(),
        system_secs: system as f64 / clock_ticks(),
        peak_rss_bytes: hwm,
    })
}

/// (utime, stime) (fields 14 and 15) of a `/proc/<pid>/stat` line.
pub fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some((utime, stime))
}

/// VmHWM of a `/proc/<pid>/status`, bytes.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "4242 (incoming handl) S 1 4242 4242 0 -1 4194560 3000 0 0 0 157 43 0 0 20 0 12 0 \
                    1000 900000000 9000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some((157, 43)));
        let status = "Name:\tincoming-handler\nVmPeak:\t  900000 kB\nVmHWM:\t   31500 kB\nVmRSS:\t 30000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(31500 * 1024));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn cpu_lines_parse() {
        assert_eq!(
            parse_cpu_line("cpu  100 5 50 800 20 1 2 3 0 0"),
            Some((161, 981))
        );
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5 6 7 8"), None);
        let (busy, total) = cpu_jiffies().unwrap();
        assert!(busy <= total);
    }

    #[test]
    fn this_process_can_be_measured() {
        let u = usage(std::process::id()).unwrap();
        assert!(u.peak_rss_bytes > 0);
        assert!(u.cpu_secs >= 0.0);
    }
}
