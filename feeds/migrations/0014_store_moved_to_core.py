"""The store, its ERP connection, job leases, call counts and rate limits moved to core (core 0001): in the state
only. Feeds' foreign keys point at core.Store, then the models leave feeds; their tables stay as they are."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("core", "0001_initial"),
        ("feeds", "0013_store_erp_api_key"),
        ("orders", "0010_store_moved_to_core"),  # nothing points at feeds.Store any more when it goes
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="feedconfig",
                    name="store",
                    field=models.OneToOneField(on_delete=django.db.models.deletion.CASCADE,
                                               related_name="feed_config", to="core.store"),
                ),
                migrations.AlterField(
                    model_name="feedevent",
                    name="store",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="events",
                                            to="core.store"),
                ),
                migrations.AlterField(
                    model_name="hookrejection",
                    name="store",
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="hook_rejections", to="core.store"),
                ),
                migrations.DeleteModel(name="ErpConnection"),
                migrations.DeleteModel(name="JobLease"),
                migrations.DeleteModel(name="CallCount"),
                migrations.DeleteModel(name="VtexRateLimit"),
                migrations.DeleteModel(name="Store"),
            ],
            database_operations=[],
        ),
    ]
