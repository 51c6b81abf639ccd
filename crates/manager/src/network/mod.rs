//! Networks on the manager: the address allocator (leader only) and, later, what each node's
//! data plane needs to know.

pub mod alloc;
