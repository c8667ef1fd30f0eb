// libFuzzer target over the real inbound replica session in auth mode
// `seal` (PROTOCOL.md §2b): fuzz_replica_session_mac.cpp with the harness
// encrypting every batch, its SEAL header and the tail (see there).
#define NEXRES_FUZZ_SEAL 1
#include "fuzz_replica_session_mac.cpp"
