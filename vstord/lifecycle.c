/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The daemon's lifetime: a stop request (quit, a signal) wakes the
 * coroutine that serves.
 */
#include "vstord.h"

#include "vstor/reactor.h"

static struct {
	bool requested;
	struct vs_co_queue wait;
} stop;

void vstord_request_stop(void)
{
	stop.requested = true;
	vs_co_queue_wake_all(&stop.wait);
}

bool vstord_stop_requested(void)
{
	return stop.requested;
}

void vstord_wait_stop(void)
{
	while (!stop.requested)
		vs_co_queue_wait(&stop.wait);
}
