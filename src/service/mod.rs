//! What the edges share: the reads and reports the API, the pages and the CLI give alike. An edge
//! (a handler, a page, a command of the CLI) parses its input, calls one of these, and shapes the
//! answer for its own medium; it never calls another edge.

pub mod customers;
pub mod pages;
pub mod portal_link;
pub mod revenue;
pub mod sign_in;
