//! Canonical JSON works in memory proportional to the body (issue 10: one
//! 10 MiB body used to cost ~10–40 times its size as a `serde_json::Value`).
//!
//! A counting global allocator records the heap's peak while
//! `canonical_json` runs on 10 MiB bodies of three shapes; the peak above
//! what was live before (the output included) must stay within three times
//! the body. `cargo nextest run -p idem-core --test canonical_memory
//! --no-capture` prints the ratios.

use idem_core::fingerprint::canonical_json;
use peak_alloc::PeakAlloc;
use std::sync::Mutex;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// The counters are process-wide: measure one shape at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const SIZE: usize = 10 << 20;

/// The promise: peak extra heap at most this many times the body.
const BOUND: f64 = 3.0;

/// Peak heap bytes above the live ones while canonicalising `body`, as a
/// multiple of its length.
fn peak_ratio(shape: &str, body: &[u8]) -> f64 {
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let canonical = canonical_json(body);
    let peak = HEAP.peak_usage();
    let canonical = canonical.unwrap_or_else(|| panic!("{shape}: does not parse"));
    assert!(
        canonical.len() <= body.len(),
        "{shape}: longer than the body"
    );
    let ratio = peak.saturating_sub(before) as f64 / body.len() as f64;
    println!(
        "{shape}: body {} bytes, canonical {} bytes, peak extra heap {:.2}x the body",
        body.len(),
        canonical.len(),
        ratio
    );
    ratio
}

/// Builds a body and measures it, one shape at a time: another test's
/// allocations would count in this one's peak.
fn check(shape: &str, bound: f64, build: impl FnOnce() -> Vec<u8>) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let body = build();
    assert!(body.len() >= SIZE, "{shape}: body too small");
    let ratio = peak_ratio(shape, &body);
    assert!(
        ratio <= bound,
        "{shape}: peak extra heap {ratio:.2}x the body (bound {bound}x)"
    );
}

/// A small pseudo-random sequence, so keys arrive out of order.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn an_array_of_many_small_numbers() {
    check("array of small numbers", BOUND, || {
        let mut noise = Noise(1);
        let mut body = b"[".to_vec();
        while body.len() < SIZE {
            let n = noise.next();
            let number = match n % 4 {
                0 => (n % 100).to_string(),
                1 => format!("-{}", n % 100_000),
                2 => format!("{}.{}", n % 1000, n % 97 + 1),
                _ => format!("{}", n >> 20),
            };
            body.extend_from_slice(number.as_bytes());
            body.push(b',');
        }
        body.extend_from_slice(b"0]");
        body
    });
}

#[test]
fn an_object_with_many_small_members() {
    check("object of small members", BOUND, || {
        // Keys in pseudo-random order, so the whole body is one object to sort.
        let mut noise = Noise(2);
        let mut body = b"{".to_vec();
        let mut i = 0u64;
        while body.len() < SIZE {
            if i > 0 {
                body.push(b',');
            }
            let k = noise.next() % 1_000_000_000;
            body.extend_from_slice(format!(r#""k{k}_{i}":{}"#, k % 1000).as_bytes());
            i += 1;
        }
        body.push(b'}');
        body
    });
}

#[test]
fn deeply_nested_small_objects() {
    check("deeply nested small objects", BOUND, || {
        // A top-level object of chains of small objects nested 100 deep (the
        // parser's limit is 128), members out of order at every level.
        fn chain(depth: usize, n: u64, out: &mut Vec<u8>) {
            for level in 0..depth {
                out.extend_from_slice(format!(r#"{{"z":{n},"y":"l{level}","x":"#).as_bytes());
            }
            out.extend_from_slice(b"null");
            for _ in 0..depth {
                out.extend_from_slice(br#","w":true}"#);
            }
        }
        let mut noise = Noise(3);
        let mut body = b"{".to_vec();
        let mut i = 0u64;
        while body.len() < SIZE {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(format!(r#""c{}_{i}":"#, noise.next() % 1000).as_bytes());
            chain(100, i, &mut body);
            i += 1;
        }
        body.push(b'}');
        body
    });
}

#[test]
fn a_typical_payload_costs_little_more_than_its_output() {
    check("typical payload", 1.5, || {
        // An object with a few members, one a large array of order-like objects
        // with keys out of order: the big array moves as one block, so only the
        // small objects go through scratch space.
        let mut body = br#"{"request_id":"req_0001","orders":["#.to_vec();
        let mut i = 0u64;
        while body.len() < SIZE {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(
                format!(
                    r#"{{"customer":"cus_{i:08}","items":[{{"sku":"A-{i}","qty":{q},"price":12.5}},{{"sku":"B-7","qty":1,"price":99.99}}],"shipping":{{"name":"Ada Lovelace","city":"London","postal_code":"SW1Y 4JH"}},"metadata":{{"order_id":"{i}","channel":"web"}}}}"#,
                    q = i % 7 + 1
                )
                .as_bytes(),
            );
            i += 1;
        }
        body.extend_from_slice(format!(r#"],"count":{i}}}"#).as_bytes());
        body
    });
}
