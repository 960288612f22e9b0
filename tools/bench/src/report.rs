//! The result of a run, as ghz reports it: the same JSON field names and
//! units (durations in nanoseconds, gRPC status names as Go spells them),
//! so scripts that read ghz's `-O json` read this too, and a summary text
//! laid out like ghz's. Latency figures (fastest, slowest, distribution,
//! histogram) are over OK calls only and the average over all, as in ghz.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `normal` (the count was reached) or `timeout` (the duration was).
    pub end_reason: &'static str,
    pub options: ReportOptions,
    /// When the run ended, RFC 3339.
    pub date: String,
    pub count: u64,
    /// Wall time of the run, ns.
    pub total: u64,
    pub average: u64,
    pub fastest: u64,
    pub slowest: u64,
    pub rps: f64,
    pub error_distribution: BTreeMap<String, u64>,
    pub status_code_distribution: BTreeMap<String, u64>,
    pub latency_distribution: Vec<LatencyPoint>,
    pub histogram: Vec<Bucket>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

/// The run's settings, under ghz's names. Metadata is left out: it
/// usually holds the API key.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReportOptions {
    pub call: String,
    pub host: String,
    pub insecure: bool,
    pub concurrency: usize,
    pub connections: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rps: Option<u32>,
    /// ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencyPoint {
    pub percentage: u32,
    /// ns.
    pub latency: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bucket {
    /// The bucket's upper bound, in seconds.
    pub mark: f64,
    pub count: u64,
    /// The share of OK calls in the bucket, 0 to 1.
    pub frequency: f64,
}

/// What the workers counted.
#[derive(Debug, Default)]
pub struct Tally {
    /// Latencies of OK calls, ns.
    pub ok_latencies: Vec<u64>,
    /// All calls' latencies added up, ns.
    pub latency_sum: u128,
    pub count: u64,
    pub statuses: BTreeMap<&'static str, u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    pub fn record(&mut self, latency: Duration, result: Result<(), &tonic::Status>) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.count += 1;
        self.latency_sum += u128::from(nanos);
        let code = match result {
            Ok(()) => {
                self.ok_latencies.push(nanos);
                tonic::Code::Ok
            }
            Err(status) => {
                // Go's grpc error text, which ghz's errorDistribution keys on.
                let text = format!(
                    "rpc error: code = {} desc = {}",
                    code_name(status.code()),
                    status.message()
                );
                *self.errors.entry(text).or_default() += 1;
                status.code()
            }
        };
        *self.statuses.entry(code_name(code)).or_default() += 1;
    }

    pub fn merge(&mut self, other: Self) {
        self.ok_latencies.extend(other.ok_latencies);
        self.latency_sum += other.latency_sum;
        self.count += other.count;
        for (code, n) in other.statuses {
            *self.statuses.entry(code).or_default() += n;
        }
        for (error, n) in other.errors {
            *self.errors.entry(error).or_default() += n;
        }
    }
}

/// gRPC codes as Go's `codes.Code.String()` names them (ghz's keys).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

impl Report {
    pub fn new(
        mut tally: Tally,
        wall: Duration,
        end_reason: &'static str,
        options: ReportOptions,
    ) -> Self {
        tally.ok_latencies.sort_unstable();
        let ok = &tally.ok_latencies;
        let average = if tally.count == 0 {
            0
        } else {
            u64::try_from(tally.latency_sum / u128::from(tally.count)).unwrap_or(u64::MAX)
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            name: None,
            end_reason,
            options,
            date: prost_types::Timestamp {
                seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }
            .to_string(),
            count: tally.count,
            total: u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
            average,
            fastest: ok.first().copied().unwrap_or(0),
            slowest: ok.last().copied().unwrap_or(0),
            rps: if wall.is_zero() {
                0.0
            } else {
                tally.count as f64 / wall.as_secs_f64()
            },
            error_distribution: tally.errors,
            status_code_distribution: tally
                .statuses
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            latency_distribution: percentiles(ok),
            histogram: histogram(ok),
            tags: None,
        }
    }

    /// ghz's `summary` text.
    pub fn summary(&self) -> String {
        let ms = |ns: u64| format!("{:.2} ms", ns as f64 / 1e6);
        let mut s = String::new();
        let _ = writeln!(s, "\nSummary:");
        if let Some(name) = &self.name {
            let _ = writeln!(s, "  Name:\t{name}");
        }
        let _ = writeln!(s, "  Count:\t{}", self.count);
        let _ = writeln!(s, "  Total:\t{}", ms(self.total));
        let _ = writeln!(s, "  Slowest:\t{}", ms(self.slowest));
        let _ = writeln!(s, "  Fastest:\t{}", ms(self.fastest));
        let _ = writeln!(s, "  Average:\t{}", ms(self.average));
        let _ = writeln!(s, "  Requests/sec:\t{:.2}", self.rps);
        if !self.histogram.is_empty() {
            let _ = writeln!(s, "\nResponse time histogram:");
            let widest = self.histogram.iter().map(|b| b.count).max().unwrap_or(1);
            for b in &self.histogram {
                let bar = "∎".repeat(((b.count * 40) / widest.max(1)) as usize);
                let _ = writeln!(s, "  {:.3} [{}]\t|{bar}", b.mark * 1e3, b.count);
            }
        }
        if !self.latency_distribution.is_empty() {
            let _ = writeln!(s, "\nLatency distribution:");
            for p in &self.latency_distribution {
                let _ = writeln!(s, "  {} % in {}", p.percentage, ms(p.latency));
            }
        }
        let _ = writeln!(s, "\nStatus code distribution:");
        for (code, n) in &self.status_code_distribution {
            let _ = writeln!(s, "  [{code}]\t{n} responses");
        }
        if !self.error_distribution.is_empty() {
            let _ = writeln!(s, "\nError distribution:");
            for (error, n) in &self.error_distribution {
                let _ = writeln!(s, "  [{n}]\t{error}");
            }
        }
        s
    }
}

/// The 10th to 99th percentiles of sorted latencies, by ghz's rank rule.
fn percentiles(sorted: &[u64]) -> Vec<LatencyPoint> {
    if sorted.is_empty() {
        return Vec::new();
    }
    [10, 25, 50, 75, 90, 95, 99]
        .into_iter()
        .map(|percentage| {
            // The p-th percentile is the value at rank ceil(p/100 * n),
            // counting from 1.
            let rank = (u64::from(percentage) * sorted.len() as u64).div_ceil(100);
            let index = usize::try_from(rank.saturating_sub(1)).unwrap_or(0);
            LatencyPoint {
                percentage,
                latency: sorted[index.min(sorted.len() - 1)],
            }
        })
        .collect()
}

/// Ten equal-width buckets from the fastest to the slowest call (plus one
/// for the slowest), as ghz draws them.
fn histogram(sorted: &[u64]) -> Vec<Bucket> {
    let (Some(&fastest), Some(&slowest)) = (sorted.first(), sorted.last()) else {
        return Vec::new();
    };
    const BUCKETS: u64 = 10;
    let width = (slowest - fastest) as f64 / BUCKETS as f64;
    let marks: Vec<f64> = (0..BUCKETS)
        .map(|i| fastest as f64 + width * i as f64)
        .chain([slowest as f64])
        .collect();
    let mut counts = vec![0u64; marks.len()];
    let mut bucket = 0;
    for &latency in sorted {
        while (latency as f64) > marks[bucket] && bucket < marks.len() - 1 {
            bucket += 1;
        }
        counts[bucket] += 1;
    }
    marks
        .into_iter()
        .zip(counts)
        .map(|(mark, count)| Bucket {
            mark: mark / 1e9,
            count,
            frequency: count as f64 / sorted.len() as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_ghz_ranks() {
        let lat: Vec<u64> = (1..=100).collect();
        let p = percentiles(&lat);
        assert_eq!(
            p[0],
            LatencyPoint {
                percentage: 10,
                latency: 10
            }
        );
        assert_eq!(
            p[2],
            LatencyPoint {
                percentage: 50,
                latency: 50
            }
        );
        assert_eq!(
            p[6],
            LatencyPoint {
                percentage: 99,
                latency: 99
            }
        );
        assert_eq!(percentiles(&[7])[6].latency, 7);
        assert!(percentiles(&[]).is_empty());
    }

    #[test]
    fn histogram_counts_every_call_once() {
        let lat: Vec<u64> = (0..1000).map(|i| 1_000 + i * 3).collect();
        let h = histogram(&lat);
        assert_eq!(h.len(), 11);
        assert_eq!(h.iter().map(|b| b.count).sum::<u64>(), 1000);
        assert!((h.last().expect("bucket").mark - 3.997e-6).abs() < 1e-12);
    }

    #[test]
    fn status_and_error_distributions_use_go_names() {
        let mut t = Tally::default();
        t.record(Duration::from_millis(1), Ok(()));
        t.record(
            Duration::from_millis(3),
            Err(&tonic::Status::not_found("no such verification")),
        );
        let r = Report::new(
            t,
            Duration::from_secs(1),
            "normal",
            ReportOptions::default(),
        );
        assert_eq!(r.status_code_distribution["OK"], 1);
        assert_eq!(r.status_code_distribution["NotFound"], 1);
        assert_eq!(
            r.error_distribution["rpc error: code = NotFound desc = no such verification"],
            1
        );
        assert_eq!(
            (r.fastest, r.slowest, r.average),
            (1_000_000, 1_000_000, 2_000_000)
        );
    }
}
