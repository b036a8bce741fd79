//! Volli's networking: the libp2p swarm, owned by one event loop, and a cheap client handle.
//! (Filled in by the federation work.)
#![warn(missing_docs)]
