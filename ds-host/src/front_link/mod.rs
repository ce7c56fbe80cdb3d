//! The control socket between the supervisor and the front door
//! (docs/privsep.md): one `SOCK_SEQPACKET` pair, one JSON message per
//! packet ([`messages`]), descriptors only as `SCM_RIGHTS` on the message
//! kinds defined to carry them ([`wire`]). Both processes are this binary;
//! this module is all they share.

pub mod messages;
pub mod pending;
pub mod wire;
