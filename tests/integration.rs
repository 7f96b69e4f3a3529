//! All integration tests build into one binary (faster to link, one place to look).

mod support;

mod integration {
    mod alerts;
    mod archive;
    mod cli;
    mod cluster;
    mod cluster_chaos;
    mod config;
    mod crash;
    mod d1;
    mod d1_fidelity;
    mod d1_restore;
    mod daemon;
    mod dump;
    mod dump_props;
    mod encryption;
    mod faults;
    mod hostile;
    mod hostile_http;
    mod http;
    mod layers;
    mod ops;
    mod replica;
    mod restore_points;
    mod secrets;
    mod soak;
    mod source_faults;
    mod store;
}
