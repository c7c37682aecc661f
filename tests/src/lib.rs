//! Keel's test harness: boots the assembled image under QEMU (see `vm`).
