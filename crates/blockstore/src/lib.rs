//! One block volume on one node.
