//! All integration tests build into one binary (faster to link, one place to look).

mod support;

mod integration {
    mod archive;
    mod cli;
    mod config;
    mod d1;
    mod daemon;
    mod dump;
    mod store;
}
