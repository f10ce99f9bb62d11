"""The three staff groups: Viewer (read only), Operator (acts on orders), Administrator (stores, secrets, feeds)."""

from django.db import migrations

VIEW_MODELS = ["feeds.store", "feeds.erpconnection", "feeds.feedconfig", "feeds.feedevent",
               "orders.ordersync", "orders.syncattempt", "django_q.task", "django_q.success",
               "django_q.failure", "django_q.schedule", "django_q.ormq"]
OPERATOR_EXTRA = ["orders.operate_orders", "feeds.run_jobs"]
ADMIN_EXTRA = ["feeds.add_store", "feeds.change_store", "feeds.delete_store",
               "feeds.add_erpconnection", "feeds.change_erpconnection", "feeds.delete_erpconnection",
               "feeds.add_feedconfig", "feeds.change_feedconfig", "orders.view_personal_data",
               "django_q.change_schedule", "django_q.add_schedule"]


def _permissions(apps, names):
    from django.contrib.auth.management import create_permissions

    for config in apps.get_app_configs():
        config.models_module = True
        create_permissions(config, verbosity=0, apps=apps)
        config.models_module = None
    Permission = apps.get_model("auth", "Permission")
    found = []
    for name in names:
        app_label, codename = name.split(".")
        found += list(Permission.objects.filter(content_type__app_label=app_label, codename=codename))
    return found


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    view = [f"{m.split('.')[0]}.view_{m.split('.')[1]}" for m in VIEW_MODELS]
    levels = {
        "Viewer": view,
        "Operator": view + OPERATOR_EXTRA,
        "Administrator": view + OPERATOR_EXTRA + ADMIN_EXTRA,
    }
    for name, perms in levels.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(_permissions(apps, perms))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Viewer", "Operator", "Administrator"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0002_alter_ordersync_options_and_more"),
        ("feeds", "0002_alter_store_options"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
