//! Codec tests: property round trips and never-panic checks ([`roundtrip`]), byte-exact
//! layouts from RFC 7143 ([`layout`]), and error dispositions ([`errors`]).

mod errors;
mod layout;
mod roundtrip;
mod strategies;
