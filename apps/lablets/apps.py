from django.apps import AppConfig


class LabletsConfig(AppConfig):
    name = "apps.lablets"
    label = "lablets"

    def ready(self):
        from apps.lablets.services.scheduling import lablet_instances_unplace_worker
        from apps.lablets.placement import instance_bookings
        from apps.workers.ledger import worker_bookings
        from apps.workers.signals import worker_withdrawn

        # A worker that can no longer host its scheduled instances: they are placed elsewhere.
        worker_withdrawn.connect(
            lambda sender, worker, actor, reason, **kwargs: lablet_instances_unplace_worker(
                worker=worker, actor=actor, reason=reason), weak=False, dispatch_uid="lablets_unplace_worker")
        # The capacity ledger's lablet rows: live instances by slot.
        worker_bookings.connect(
            lambda sender, worker_ids, start, end, exclude, **kwargs: instance_bookings(
                worker_ids, start, end, exclude_pk=exclude.get("instance")),
            weak=False, dispatch_uid="lablets_bookings")
        # ... and warm labs, held open-ended until an instance takes one or it is recycled.
        from apps.lablets.services.warm import warm_lab_bookings

        worker_bookings.connect(
            lambda sender, worker_ids, start, end, exclude, **kwargs: warm_lab_bookings(
                worker_ids, start, end, exclude_pk=exclude.get("warm_lab")),
            weak=False, dispatch_uid="lablets_warm_bookings")
