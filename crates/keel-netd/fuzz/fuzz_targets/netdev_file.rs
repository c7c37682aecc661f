//! Arbitrary bytes as a `.netdev` file, and as a directory of one
//! `.netdev` and one `.network` run through `check`: must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (r, _) =
        keel_netd::config::netdev::parse_text(std::path::Path::new("fuzz.netdev"), &text);
    if let Ok(d) = r {
        let _ = d.describe();
        let _ = keel_netd::netlink::netdev_message(&d, Some(2));
    }
    for w in text.split_whitespace().take(8) {
        let _ = keel_netd::config::dns_server(w);
        let _ = keel_netd::config::netdev::parse_timespan(w);
        let _ = keel_netd::config::cond::Condition::parse("KernelCommandLine", w);
    }
});
