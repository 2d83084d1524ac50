package processors

// KillWorker stops w as a crash would: its consumer leaves the group and its jobs stop,
// and it writes nothing more (no return to the queue, no outcome, no offset).
func KillWorker(w *Worker) { w.kill() }
