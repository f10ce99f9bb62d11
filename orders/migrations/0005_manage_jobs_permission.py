"""`feeds.manage_jobs` (re-run or delete job records), for Administrator only; schedules are no longer edited by anyone.

The permission sits on the Store content type, beside `feeds.run_jobs`, and is made here rather than in
Store's Meta so that it needs no schema migration of feeds. (create_permissions never deletes a
permission missing from Meta, so it stays.) feeds/admin/jobs.py checks it. `django_q.add_schedule` and
`django_q.change_schedule` are taken back from Administrator: the admin no longer offers either to anyone.
"""

from django.db import migrations

MANAGE_JOBS = ("feeds", "store", "manage_jobs", "Can re-run or delete job records")
ADMIN_GROUP = "Administrator"
WITHDRAWN = [("django_q", "add_schedule"), ("django_q", "change_schedule")]


def grant_manage_jobs(apps, schema_editor) -> None:
    app_label, model, codename, name = MANAGE_JOBS
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(app_label=app_label, model=model)
    permission, _ = Permission.objects.get_or_create(content_type=content_type, codename=codename,
                                                     defaults={"name": name})
    group, _ = Group.objects.get_or_create(name=ADMIN_GROUP)
    group.permissions.add(permission)
    group.permissions.remove(*Permission.objects.filter(
        content_type__app_label="django_q", codename__in=[codename for _, codename in WITHDRAWN]))


def revoke_manage_jobs(apps, schema_editor) -> None:
    app_label, model, codename, _ = MANAGE_JOBS
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    Permission.objects.filter(content_type__app_label=app_label, content_type__model=model,
                              codename=codename).delete()
    group = Group.objects.filter(name=ADMIN_GROUP).first()
    if group is not None:
        group.permissions.add(*Permission.objects.filter(
            content_type__app_label="django_q", codename__in=[codename for _, codename in WITHDRAWN]))


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0004_ordersync_order_sync_store_state_and_more"),
        ("feeds", "0002_alter_store_options"),  # Store's Meta.permissions (run_jobs) exists from here
    ]

    operations = [migrations.RunPython(grant_manage_jobs, revoke_manage_jobs)]
