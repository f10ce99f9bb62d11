"""The hook receiver: each store's hook secret (encrypted; "" while unset) and the count of refused hook calls."""

import django.core.validators
import django.db.models.deletion
import feeds.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('feeds', '0006_encrypt_secrets'),
    ]

    operations = [
        migrations.AddField(
            model_name='store',
            name='hook_secret',
            field=feeds.models.OptionalEncryptedTextField(blank=True, default='', validators=[django.core.validators.MaxLengthValidator(500)]),
        ),
        migrations.CreateModel(
            name='HookRejection',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('reason', models.CharField(choices=[('method', 'Wrong method (405)'), ('unknown_store', 'Unknown store (404)'), ('disabled_store', 'Store disabled (404)'), ('no_token', 'No hook token (401)'), ('wrong_token', 'Wrong hook token (401)'), ('no_secret', 'Store has no hook secret (401)'), ('too_large', 'Body too large (413)'), ('bad_json', 'Malformed JSON (400)'), ('bad_shape', 'Not a VTEX notification (400)'), ('wrong_origin', 'Origin is another account or appKey (403)')], max_length=20)),
                ('count', models.PositiveIntegerField(default=0)),
                ('last_at', models.DateTimeField()),
                ('store', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='hook_rejections', to='feeds.store')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('store', 'reason'), name='hook_rejection_unique'), models.UniqueConstraint(condition=models.Q(('store__isnull', True)), fields=('reason',), name='hook_rejection_unique_unknown')],
            },
        ),
    ]
