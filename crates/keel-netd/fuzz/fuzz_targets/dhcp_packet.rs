//! Arbitrary bytes as an IPv4/UDP frame and as a BOOTP payload through the
//! client's decoder path (sanitising, dhcproto, lease extraction).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = keel_netd::dhcp::frame::parse(data, true);
    keel_netd::dhcp::client::decode_for_fuzz(data);
});
