#ifndef CZEROMQ_SHIM_H
#define CZEROMQ_SHIM_H
#include <zmq.h>
#include <errno.h>

/// errno is a macro on glibc; Swift reads it through this function.
static inline int czmq_errno(void) { return zmq_errno(); }
#endif
