//! Privileged tests for keel-netd (root, network namespaces, dnsmasq).
